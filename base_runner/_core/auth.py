"""Who is calling: the BASE master, the challenge's owner, or a miner the master verified.

Tokens are never logged and are compared in constant time. A token that
comes from a file is read on every request, so it can be rotated.

For challenge code: :class:`OwnerAuth` guards owner routes,
:func:`verified_hotkey` gives the miner hotkey the master verified on a
bridged submission. Both answer refusals as the runner's error envelope
(:func:`base_runner.error_response`): ``{code, detail, correlation_id}``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request
from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.types import Scope

from .hotkeys import MAX_HOTKEY_LENGTH
from .logs import never_log
from .secrets import AuthFailure, read_secret_file, same_token

if TYPE_CHECKING:
    from fastapi.dependencies.models import Dependant

    from .config import ChallengeSettings
    from .settings import RunnerSettings

_T = TypeVar("_T")

SLUG_HEADERS = ("x-base-challenge-slug", "x-platform-challenge-slug")
#: The owner token's own header: the master's public proxy strips ``Authorization``, not this.
OWNER_HEADER = "x-owner-token"
#: Current masters prefix the verified identity with ``X-Base-``, older ones with ``X-Platform-``.
VERIFIED_PREFIXES = ("x-base-", "x-platform-")


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if there is one."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


@dataclass(frozen=True)
class MasterAuth:
    """Checks the master's bearer token and slug header."""

    slug: str
    token: SecretStr | None
    token_file: Path

    @classmethod
    def of(cls, settings: RunnerSettings, slug: str = "") -> MasterAuth:
        """The master's credentials as ``settings`` name them, for challenge ``slug`` (none for a scraper's)."""
        if settings.shared_token is not None:
            never_log(settings.shared_token.get_secret_value())
        return cls(slug=slug, token=settings.shared_token, token_file=settings.shared_token_file)

    def expected_token(self) -> str:
        if self.token is not None and self.token.get_secret_value():
            never_log(self.token.get_secret_value())
            return self.token.get_secret_value()
        token = read_secret_file(self.token_file)
        if token is None:
            raise AuthFailure(
                503,
                "token_not_configured",
                f"no master token is configured: set CHALLENGE_SHARED_TOKEN or mount it at {self.token_file} "
                "(CHALLENGE_SHARED_TOKEN_FILE)",
            )
        return token

    def check_token(self, headers: Mapping[str, str]) -> None:
        """Raise :class:`AuthFailure` unless ``headers`` carry the master's token (a scraper sends no slug)."""
        expected = self.expected_token()
        given = bearer_token(headers)
        if given is None:
            raise AuthFailure(401, "missing_token", "send Authorization: Bearer <token>")
        if not same_token(given, expected):
            raise AuthFailure(401, "invalid_token", "the bearer token is not this challenge's token")

    def check(self, headers: Mapping[str, str]) -> None:
        """Raise :class:`AuthFailure` unless ``headers`` carry the master's token and this slug."""
        self.check_token(headers)
        slug = next((headers[h] for h in SLUG_HEADERS if h in headers), None)
        if slug is None:
            raise AuthFailure(400, "missing_slug", "send X-Base-Challenge-Slug: <slug>")
        if slug != self.slug:
            raise AuthFailure(400, "wrong_slug", f"this is challenge {self.slug!r}, not {slug[:64]!r}")


def token_problem(auth: MasterAuth) -> str | None:
    """Why the master could not pull weights now (no or an unreadable token); ``None`` when it could."""
    try:
        auth.expected_token()
    except AuthFailure as failure:
        return failure.detail
    return None


class OwnerAuth:
    """FastAPI dependency: the request carries the challenge owner's token.

    The token is the ``owner_token`` secret of ``settings`` (by default
    ``CHALLENGE_OWNER_TOKEN``, or the file named by
    ``CHALLENGE_OWNER_TOKEN_FILE``, read on every request). The caller sends
    it as ``Authorization: Bearer <token>`` or ``X-Owner-Token: <token>``;
    through the master's public proxy only the second survives. Answers 503
    when no owner token is configured, 401 when it is missing or wrong::

        admin = APIRouter(prefix="/admin", dependencies=[Depends(OwnerAuth(settings))])

    :param settings: the challenge's settings, a :class:`~base_runner.ChallengeSettings`.
    :param field: the name of the secret field that holds the token.
    """

    def __init__(self, settings: ChallengeSettings, field: str = "owner_token") -> None:
        self._settings = settings
        self._field = field

    def _expected(self) -> str:
        # Looked up on each request, so a rotated file or a replaced setting is seen at once.
        secret = getattr(self._settings, self._field)
        token = secret.get_secret_value() if secret is not None else None
        if token is None:
            variable = f"{self._settings.model_config.get('env_prefix', '')}{self._field}".upper()
            raise AuthFailure(
                503, "owner_token_not_configured", f"no owner token is configured: set {variable} or {variable}_FILE"
            )
        return token

    async def __call__(self, request: Request) -> None:
        self.check(request.headers)

    def check(self, headers: Mapping[str, str]) -> None:
        """Raise :class:`AuthFailure` unless ``headers`` carry the owner's token."""
        expected = self._expected()
        given = bearer_token(headers) or headers.get(OWNER_HEADER, "").strip()
        if not given:
            raise AuthFailure(
                401, "missing_owner_token", "send Authorization: Bearer <owner token> or X-Owner-Token: <owner token>"
            )
        if not same_token(given, expected):
            raise AuthFailure(401, "invalid_owner_token", "the owner token is not this challenge's owner token")


def _calls(dependant: Dependant, overrides: Mapping[Any, Any], kind: type[_T]) -> Iterator[_T]:
    for dependency in dependant.dependencies:
        if dependency.call in overrides:
            continue  # replaced, with everything below it, as FastAPI does
        if isinstance(dependency.call, kind):
            yield dependency.call
        yield from _calls(dependency, overrides, kind)


def route_dependencies(scope: Scope, kind: type[_T]) -> list[_T]:
    """Every dependency that is a ``kind`` in the tree of the route the router matched; none outside a route.

    For the moment before a route reads the body, when FastAPI has run none of
    them yet: from the route, its router, an ``include_router`` or a
    sub-dependency, except those the app's ``dependency_overrides`` replace.
    """
    # FastAPI 0.16x matches a route of an included router through a context of its own, which
    # holds the dependencies given to include_router; older versions copy the route with them.
    context = scope.get("fastapi", {}).get("effective_route_context")
    dependant = getattr(context, "dependant", None) or getattr(scope.get("route"), "dependant", None)
    if dependant is None:
        return []
    overrides = getattr(scope.get("app"), "dependency_overrides", {})
    return list(dict.fromkeys(_calls(dependant, overrides, kind)))


def check_owner_first(scope: Scope) -> None:
    """Raise :class:`AuthFailure` unless the request carries the owner token its route depends on.

    For the moment before a route reads the body: FastAPI reads and
    validates the body before it runs any dependency, so :class:`OwnerAuth`
    alone would refuse a stranger only after reading (up to the body cap)
    and parsing what it sent. Every :class:`OwnerAuth` of the matched route
    (:func:`route_dependencies`) is checked; a request that reached no
    route, or a route without one, passes.
    """
    owners = route_dependencies(scope, OwnerAuth)
    if owners:
        headers = Headers(scope=scope)
        for owner in owners:
            owner.check(headers)


@dataclass(frozen=True)
class VerifiedHotkey:
    """The miner identity the master verified before it bridged a submission here."""

    #: The miner's hotkey (``X-Base-Verified-Hotkey``), whose signature the master checked.
    hotkey: str
    #: Its uid on the subnet (``X-Base-Verified-Uid``), when the master knows it.
    uid: int | None = None
    #: The nonce the miner signed (``X-Base-Verified-Nonce``); the master refuses a replay.
    nonce: str | None = None
    #: SHA-256 of the body the miner signed (``X-Base-Request-Hash``), checked against this body.
    request_hash: str | None = None


def _verified_header(headers: Mapping[str, str], name: str) -> str | None:
    for prefix in VERIFIED_PREFIXES:
        value = headers.get(prefix + name, "").strip()
        if value:
            return value
    return None


async def verified_hotkey(request: Request) -> VerifiedHotkey:
    """FastAPI dependency: the hotkey the master verified, on a request the master sent.

    The identity headers are trusted only on a request that carries the
    master's token and this challenge's slug (as on
    ``/internal/v1/get_weights``); anyone else gets 401 or 400, whatever
    headers they send. The body must hash to ``X-Base-Request-Hash`` when
    the master sends it, so the hotkey is bound to this very body. Older
    masters' ``X-Platform-*`` names are accepted too. Use it on the bridge
    route, ``POST /internal/v1/bridge/submissions``::

        @router.post("/internal/v1/bridge/submissions")
        async def bridged(miner: Annotated[VerifiedHotkey, Depends(verified_hotkey)]) -> ...:
    """
    master: MasterAuth = request.app.state.master_auth
    master.check(request.headers)
    headers = request.headers
    hotkey = _verified_header(headers, "verified-hotkey")
    if hotkey is None:
        raise AuthFailure(
            400, "missing_verified_hotkey", "send X-Base-Verified-Hotkey: <the hotkey the master verified>"
        )
    if len(hotkey) > MAX_HOTKEY_LENGTH:
        raise AuthFailure(
            400, "invalid_verified_hotkey", f"the verified hotkey is longer than {MAX_HOTKEY_LENGTH} characters"
        )
    uid_text = _verified_header(headers, "verified-uid")
    if uid_text is not None and not uid_text.isdecimal():
        raise AuthFailure(400, "invalid_verified_uid", "X-Base-Verified-Uid must be a non-negative integer")
    request_hash = _verified_header(headers, "request-hash")
    if request_hash is not None:
        actual = hashlib.sha256(await request.body()).hexdigest()
        if not same_token(request_hash.lower(), actual):
            raise AuthFailure(
                400, "request_hash_mismatch", "the body is not the one the master verified (X-Base-Request-Hash)"
            )
    return VerifiedHotkey(
        hotkey=hotkey,
        uid=int(uid_text) if uid_text is not None else None,
        nonce=_verified_header(headers, "verified-nonce"),
        request_hash=request_hash,
    )
