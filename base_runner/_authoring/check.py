"""``base-runner check``: the contract a challenge must meet, checked before it is published.

Everything runs in this process, on a temporary data dir removed at the end:
the plugin is loaded, its tables created, the app started through its own
lifespan, and then called through httpx's ASGI transport the way the BASE
master calls it. Each check ends in one :class:`Outcome`; a check that later
ones depend on stops the run when it fails.
"""

from __future__ import annotations

import contextlib
import importlib.util
import secrets
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import SecretStr

from .._core.errors import ConfigError, PluginError, describe
from .._core.settings import DATABASE_FILE, RunnerSettings, load_settings, scrub_environment
from .._core.text import plural
from .._core.wire import API_VERSION
from .._http.assembly import bind, build_runner
from .._jobs.tasks import describe_task, task_hints_problem, tasks_of
from .._observe.loopwatch import longest_stall
from .._plugins.plugins import Challenge, LoadedChallenge, load
from .._plugins.routes import routers_of
from .._storage.datadir import LOCK_FILE
from .._storage.db import database
from .._weights.weights import WeightsError, body_problems, compute

if TYPE_CHECKING:
    import httpx

#: Seconds without a turn of the event loop that make an async ``get_weights`` a blocking one.
BLOCKING_STALL = 0.5
#: The capabilities the master requires by default before it routes traffic to a challenge.
REQUIRED_CAPABILITIES = ("get_weights", "proxy_routes")


@dataclass(frozen=True)
class Outcome:
    """The result of one check."""

    check: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.check}: {self.detail}"


class _Stop(Exception):
    """A check the remaining ones depend on failed."""


class _Report:
    """Hands each outcome on as it comes, and counts the failures."""

    def __init__(self, report: Callable[[Outcome], None]) -> None:
        self._report = report
        self.failures = 0

    def passed(self, check: str, detail: str) -> None:
        self._report(Outcome(check, True, detail))

    def failed(self, check: str, detail: str) -> None:
        self.failures += 1
        self._report(Outcome(check, False, detail))

    def stop(self, check: str, detail: str) -> NoReturn:
        self.failed(check, detail)
        raise _Stop


def copy_data(source: Path, target: Path) -> None:
    """Copy the data dir ``source`` into ``target``, the database through SQLite's backup (safe while live).

    The runner's own files (its lock, ``tmp``, ``backups``) stay behind; ``source`` is only read.
    """
    skipped = {LOCK_FILE, "tmp", "backups", DATABASE_FILE, f"{DATABASE_FILE}-wal", f"{DATABASE_FILE}-shm"}
    for entry in source.iterdir():
        if entry.name in skipped:
            continue
        if entry.is_dir():
            shutil.copytree(entry, target / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, target / entry.name, follow_symlinks=False)
    database = source / DATABASE_FILE
    if database.is_file():
        live = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
        copy = sqlite3.connect(target / DATABASE_FILE)
        try:
            live.backup(copy)
        finally:
            copy.close()
            live.close()


def route_conflicts(routes: list[Any]) -> list[str]:
    """Routes a request can never reach: the same method and path twice, or a path an earlier route matches."""
    problems = []
    for index, later in enumerate(routes):
        for earlier in routes[:index]:
            methods = (getattr(earlier, "methods", None) or set()) & (getattr(later, "methods", None) or set())
            pattern = getattr(earlier, "path_regex", None)
            if not methods or pattern is None or not pattern.match(getattr(later, "path", "")):
                continue
            method = sorted(methods)[0]
            if earlier.path == later.path:
                problems.append(f"{method} {later.path} is declared twice; the second never runs")
            else:
                problems.append(
                    f"{method} {later.path} is shadowed by {method} {earlier.path}, declared before it: "
                    "declare it first"
                )
            break
    return problems


async def run(challenge: Challenge, report: Callable[[Outcome], None], data: Path | None = None) -> int:
    """Check ``challenge``, handing each outcome to ``report`` as it comes; returns how many failed.

    Call it once per process: like ``serve``, it takes the master's
    credentials out of the environment and points ``base_runner.database``
    at its own temporary database: empty, or a copy of the data dir ``data``
    (real data, for a ``get_weights`` that only fails on rows).
    """
    if importlib.util.find_spec("httpx") is None:
        raise ConfigError("base-runner check calls the app with httpx: pip install 'base-runner[testing]'")
    outcomes = _Report(report)
    with tempfile.TemporaryDirectory(prefix="base-runner-check-") as tmp:
        if data is not None:
            copy_data(data, Path(tmp))
        token = secrets.token_urlsafe(32)
        settings = load_settings(
            data_dir=Path(tmp), shared_token=SecretStr(token), shared_token_file=Path(tmp) / "no-token-file"
        )
        # The check's own database, whatever CHALLENGE_DATABASE_URL names.
        settings.database_url = None
        scrub_environment()
        bind(settings)
        with contextlib.suppress(_Stop):
            await _checks(challenge, settings, token, outcomes)
    return outcomes.failures


async def _checks(challenge: Challenge, settings: RunnerSettings, token: str, outcomes: _Report) -> None:
    import httpx

    try:
        loaded = load(challenge)
    except PluginError as exc:
        outcomes.stop("load", str(exc))
    outcomes.passed("load", f"{challenge.describe()}, hooks: {', '.join(loaded.hooks)}")

    try:
        routes = [route for router in routers_of(loaded) for route in router.routes]
    except PluginError as exc:
        outcomes.stop("routes", str(exc))
    conflicts = route_conflicts(routes)
    if conflicts:
        outcomes.failed("routes", "; ".join(conflicts))
    else:
        outcomes.passed("routes", f"{len(routes)} routes, none on a path the runner serves, none shadowed")

    _tasks(loaded, outcomes)

    try:
        created = await database.create_all()
    except Exception as exc:
        await database.close()
        outcomes.stop("tables", f"create_all raised {describe(exc)}")
    outcomes.passed("tables", "created " + ", ".join(created) if created else "the challenge declares no table")

    runner = build_runner(loaded, settings)
    # A copy of real data may hold queued jobs: check must not run them (they call judges, run containers).
    runner.jobs.autorun = False
    app = runner.app
    lifespan = app.router.lifespan_context(app)
    try:
        await lifespan.__aenter__()
    except Exception as exc:
        outcomes.stop("startup", f"raised {describe(exc)}")
    outcomes.passed("startup", "the database answers and the lifespan hooks ran")
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://challenge", timeout=30) as client:
            await _get_weights(loaded, settings.weights_timeout, outcomes)
            await _readiness_gate(client, loaded.name, loaded.version, outcomes)
            await _master_weights(client, loaded.name, token, outcomes)
    finally:
        try:
            await lifespan.__aexit__(None, None, None)
        except Exception as exc:
            outcomes.failed("shutdown", f"raised {describe(exc)}")
        else:
            outcomes.passed("shutdown", "the lifespan hooks finished and the database closed")


def _tasks(loaded: LoadedChallenge, outcomes: _Report) -> None:
    try:
        tasks = tasks_of(loaded)
    except PluginError as exc:
        outcomes.stop("tasks", str(exc))
    problems = [problem for task in tasks.values() if (problem := task_hints_problem(task)) is not None]
    if problems:
        outcomes.failed("tasks", "; ".join(problems))
    elif tasks:
        outcomes.passed("tasks", "; ".join(describe_task(task) for task in tasks.values()))
    else:
        outcomes.passed("tasks", "the challenge registers no task")


async def _get_weights(loaded: LoadedChallenge, timeout: float, outcomes: _Report) -> None:
    try:
        validated, stall = await longest_stall(compute(loaded, timeout))
    except WeightsError as exc:
        outcomes.failed("get_weights", str(exc))
        return
    if stall >= BLOCKING_STALL:
        outcomes.failed(
            "get_weights",
            f"blocks the event loop for {stall:.1f}s, stalling every request meanwhile: await its I/O, "
            "or make it a plain def (the runner runs that in a thread)",
        )
        return
    if validated.dropped:
        reasons = "; ".join(f"{hotkey}: {reason}" for hotkey, reason in validated.dropped[:5])
        invalid = plural(len(validated.dropped), "invalid entry", "invalid entries")
        outcomes.failed("get_weights", f"{invalid}, which the runner drops: {reasons}")
        return
    count = len(validated.weights)
    legal_empty = "an empty map (legal: the challenge burns its share)"
    outcomes.passed("get_weights", f"{count} valid entries" if count else legal_empty)


async def _readiness_gate(client: httpx.AsyncClient, slug: str, version: str, outcomes: _Report) -> None:
    """The master's gate, once: it routes no traffic until /health and /version answer like this."""
    health = await client.get("/health")
    about = await client.get("/version")
    problems = []
    if health.status_code != 200 or health.json().get("status") != "ok":
        problems.append(f"/health answered {health.status_code} {health.text}")
    elif health.json().get("slug") != slug:
        problems.append(f"/health names slug {health.json().get('slug')!r}, not {slug!r}")
    info = about.json() if about.status_code == 200 else {}
    if info.get("api_version") != API_VERSION:
        problems.append(f"/version api_version is {info.get('api_version')!r}, not {API_VERSION!r}")
    if info.get("challenge_version") != version:
        problems.append(f"/version challenge_version is {info.get('challenge_version')!r}, not {version!r}")
    missing = [c for c in REQUIRED_CAPABILITIES if c not in info.get("capabilities", [])]
    if missing:
        problems.append(f"/version lacks the capabilities {', '.join(missing)}")
    if problems:
        outcomes.failed("readiness gate", "; ".join(problems))
    else:
        outcomes.passed(
            "readiness gate", f"/health ok for {slug}, /version {version} with {', '.join(info['capabilities'])}"
        )


async def _master_weights(client: httpx.AsyncClient, slug: str, token: str, outcomes: _Report) -> None:
    response = await client.get(
        "/internal/v1/get_weights", headers={"Authorization": f"Bearer {token}", "X-Base-Challenge-Slug": slug}
    )
    if response.status_code != 200:
        outcomes.failed("master weights", f"/internal/v1/get_weights answered {response.status_code} {response.text}")
        return
    try:
        problems = body_problems(response.json(), slug)
    except ValueError:
        problems = ["the body is not JSON"]
    if problems:
        outcomes.failed("master weights", "; ".join(problems))
    else:
        outcomes.passed("master weights", "/internal/v1/get_weights answered 200 with a body the master accepts")
