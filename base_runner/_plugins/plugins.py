"""Discover installed challenges, select one, and load it by an explicit call.

Discovery reads entry-point metadata only; no challenge module is imported
until :func:`load` is called for the selected one, so a broken challenge that
is installed but not selected never breaks the runner.

Set ``BASE_RUNNER_TRACE_HOOKS=1`` to log every hook call with its result.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from .. import hookspecs
from .._core.errors import ConfigError, PluginError, SelectionError, describe

if TYPE_CHECKING:
    pass

log = logging.getLogger("base_runner")

#: Every hook a challenge may implement, from the specs.
HOOK_NAMES = tuple(
    sorted(name for name, value in vars(hookspecs).items() if hasattr(value, f"{hookspecs.PROJECT_NAME}_spec"))
)


@dataclass(frozen=True)
class Challenge:
    """An installed challenge, as its entry point declares it."""

    #: The entry point's name: the challenge slug.
    name: str
    #: The module (or ``module:attribute``) that holds the hook implementations.
    module: str
    #: The distribution that provides the entry point.
    distribution: str
    #: That distribution's version: the challenge version reported to the master.
    version: str

    def describe(self) -> str:
        return f"{self.name} ({self.distribution} {self.version})"


@dataclass
class LoadedChallenge:
    """A challenge whose module is imported and registered with its hooks checked."""

    challenge: Challenge
    pm: pluggy.PluginManager
    #: The hook implementations it provides, by name.
    hooks: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.challenge.name

    @property
    def version(self) -> str:
        return self.challenge.version


def discover() -> list[Challenge]:
    """Every challenge installed in the ``base_runner`` entry-point group, by name."""
    found = [
        Challenge(
            name=ep.name,
            module=ep.value,
            distribution=ep.dist.name if ep.dist else "?",
            version=ep.dist.version if ep.dist else "0",
        )
        for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT_NAME)
    ]
    return sorted(set(found), key=lambda c: (c.name, c.distribution))


def _listing(installed: Sequence[Challenge]) -> str:
    if not installed:
        return "no challenge is installed (pip install a challenge package that declares a 'base_runner' entry point)"
    return "installed: " + ", ".join(c.describe() for c in installed)


def select(name: str | None = None, installed: Sequence[Challenge] | None = None) -> Challenge:
    """Pick the challenge to run: ``name``, else ``BASE_CHALLENGE_SLUG``, else the only one installed."""
    installed = discover() if installed is None else list(installed)
    wanted = name or os.environ.get("BASE_CHALLENGE_SLUG") or None
    if wanted is None:
        if len(installed) == 1:
            return installed[0]
        if not installed:
            raise SelectionError(_listing(installed))
        raise SelectionError(
            f"{len(installed)} challenges are installed; choose one with --challenge or BASE_CHALLENGE_SLUG; "
            + _listing(installed)
        )
    matches = [c for c in installed if c.name == wanted]
    if not matches:
        raise SelectionError(f"no challenge named {wanted!r} is installed; " + _listing(installed))
    if len(matches) > 1:
        raise SelectionError(
            f"challenge {wanted!r} is provided by several distributions; uninstall all but one: "
            + ", ".join(c.describe() for c in matches)
        )
    return matches[0]


def fault(challenge: Challenge, what: str, exc: BaseException | None = None) -> PluginError:
    if exc is not None:
        log.debug("loading %s failed:\n%s", challenge.name, "".join(traceback.format_exception(exc)))
    return PluginError(f"challenge {challenge.describe()}: {what}")


#: How each hook must be written, for the one-line message about a hook written otherwise.
HOOK_SHAPES = {
    "get_weights": "`def get_weights()` or `async def get_weights()`, returning dict[str, float]",
    "register_routers": "`def register_routers()`, returning an APIRouter, a list of them, or None",
    "lifespan": "`def lifespan(app)` (not async def), returning an async context manager or None, "
    "for example a function decorated with @contextlib.asynccontextmanager or run_worker(app, ...)",
    "register_tasks": "`def register_tasks()` (not async def), returning a list of @jobs.task functions",
}


def _hook_shape_problem(module: Any) -> str | None:
    """The first hook in ``module`` whose parameters or kind its spec does not allow, as one line."""
    for name in HOOK_NAMES:
        function = getattr(module, name, None)
        if function is None or not hasattr(function, f"{hookspecs.PROJECT_NAME}_impl"):
            continue
        allowed = list(inspect.signature(getattr(hookspecs, name)).parameters)
        try:
            taken = list(inspect.signature(function).parameters)
        except (TypeError, ValueError):
            continue
        unknown = [parameter for parameter in taken if parameter not in allowed]
        if unknown:
            return (
                f"the hook {name}({', '.join(taken)}) takes {', '.join(unknown)}, which the hook does not pass; "
                f"write it as {HOOK_SHAPES[name]}"
            )
        asynchronous = inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)
        if asynchronous and name != "get_weights" or inspect.isasyncgenfunction(function):
            return f"the hook {name} is async def; write it as {HOOK_SHAPES[name]}"
    return None


def _remedy(exc: BaseException) -> str:
    """What to do about an import that failed: name the missing package when that is the fault."""
    missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
    if missing:
        top = missing.partition(".")[0]
        return f"the module {top!r} is not installed: add the package that provides it to the challenge's dependencies"
    return "fix the package or uninstall it"


def load(challenge: Challenge) -> LoadedChallenge:
    """Import the challenge's module, register its hooks and check them against the specs."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    module_name, _, attribute = challenge.module.partition(":")
    try:
        ep = importlib.metadata.EntryPoint(challenge.name, challenge.module, hookspecs.PROJECT_NAME)
        module = ep.load()
    except ConfigError as exc:  # the challenge's settings refused the environment: exit 2, not 3
        raise ConfigError(f"challenge {challenge.describe()}: {exc}") from None
    except BaseException as exc:  # SystemExit from a plugin must not end the runner silently
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise fault(challenge, f"importing {challenge.module} failed: {describe(exc)}; {_remedy(exc)}", exc) from exc
    problem = _hook_shape_problem(module)
    if problem:
        raise fault(challenge, problem)
    try:
        pm.register(module, name=challenge.name)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise fault(challenge, f"{exc}; the hooks are: {', '.join(HOOK_NAMES)}", exc) from exc
    hooks = [name for name in HOOK_NAMES if getattr(pm.hook, name).get_hookimpls()]
    if "get_weights" not in hooks:
        raise fault(
            challenge,
            f"{module_name}{':' + attribute if attribute else ''} has no get_weights hook; "
            "define `@hookimpl def get_weights() -> dict[str, float]` in it",
        )
    if os.environ.get("BASE_RUNNER_TRACE_HOOKS"):
        _trace(pm)
    return LoadedChallenge(challenge=challenge, pm=pm, hooks=hooks)


def _trace(pm: pluggy.PluginManager) -> None:
    def before(hook_name: str, _impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
        log.info("hook %s(%s)", hook_name, ", ".join(f"{k}={v!r}" for k, v in kwargs.items()))

    def after(outcome: Any, hook_name: str, _impls: Any, _kwargs: Any) -> None:
        log.info("hook %s -> %r", hook_name, outcome.get_result() if outcome.exception is None else outcome.exception)

    pm.add_hookcall_monitoring(before, after)


def _probe(challenge: Challenge) -> dict[str, Any]:
    probe = subprocess.run(
        [sys.executable, "-m", "base_runner", "plugins", "--probe", challenge.name],
        capture_output=True,
        text=True,
    )
    loads = probe.returncode == 0
    return {
        "name": challenge.name,
        "distribution": challenge.distribution,
        "version": challenge.version,
        "module": challenge.module,
        "loads": loads,
        "error": None if loads else (probe.stderr.strip().splitlines() or ["no output"])[-1],
        "hooks": probe.stdout.split() if loads else [],
    }


def describe_all() -> list[dict[str, Any]]:
    """Every installed challenge with whether it loads, each probed in its own process.

    Separate processes keep one challenge's imports and models out of
    another's, so the answer is what ``serve`` would see.
    """
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(_probe, discover()))
