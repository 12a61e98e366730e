"""The contract's rules for a challenge's routes: the runner's own paths stay the runner's, the bridge the master's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .plugins import LoadedChallenge, fault

if TYPE_CHECKING:
    from fastapi import APIRouter

#: Paths the runner serves itself; a challenge's router may not claim them.
RESERVED_PATHS = ("/health", "/ready", "/version", "/weights")
RESERVED_PREFIXES = ("/internal",)
#: The one place under ``/internal`` a challenge serves: the master forwards bridged submissions there.
BRIDGE_PREFIX = "/internal/v1/bridge/"


def _depends_on(dependant: Any, call: Any) -> bool:
    dependencies = getattr(dependant, "dependencies", ())
    return any(dep.call is call or _depends_on(dep, call) for dep in dependencies)


def routers_of(loaded: LoadedChallenge) -> list[APIRouter]:
    """The challenge's routers, flattened, with reserved paths refused.

    A route under :data:`BRIDGE_PREFIX` must depend on
    :func:`~base_runner.verified_hotkey`: the proxy keeps the public
    out of ``/internal``, but other services on the master's network reach
    it, so the master's token is what makes such a request the master's.
    """
    # Here, not at module level: listing challenges (``base-runner plugins``) must not import FastAPI.
    from fastapi import APIRouter

    from .._core.auth import verified_hotkey

    routers: list[Any] = []
    for result in loaded.pm.hook.register_routers():
        if result is None:
            continue
        routers.extend(result if isinstance(result, (list, tuple)) else [result])
    for router in routers:
        if not isinstance(router, APIRouter):
            raise fault(loaded.challenge, f"register_routers returned {type(router).__name__}, not an APIRouter")
        for route in router.routes:
            path = getattr(route, "path", "")
            if path.startswith(BRIDGE_PREFIX):
                if not _depends_on(getattr(route, "dependant", None), verified_hotkey):
                    raise fault(
                        loaded.challenge,
                        f"the route {path} does not depend on base_runner.verified_hotkey; "
                        "routes under /internal/v1/bridge/ must, so that only the master reaches them",
                    )
                continue
            if path in RESERVED_PATHS or any(
                path == prefix or path.startswith(prefix + "/") for prefix in RESERVED_PREFIXES
            ):
                raise fault(
                    loaded.challenge,
                    f"a router claims {path}, which the runner serves; move the route elsewhere "
                    f"(reserved: {', '.join(RESERVED_PATHS)}, {', '.join(p + '/...' for p in RESERVED_PREFIXES)})",
                )
    return routers
