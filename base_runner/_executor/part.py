"""The executor as a part of the runner: installed for the challenge, stale containers removed, its health published."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from .._core.runtime import Runtime
from .._core.settings import RunnerSettings
from .service import Executor, install
from .setup import build

log = logging.getLogger("base_runner")

#: The capability a master requires of a challenge registered to run containers through its broker.
CAPABILITY = "docker_executor"
#: Seconds between looks at whether the backend answers, for ``/health``.
PROBE_INTERVAL = 30.0


def in_use(settings: RunnerSettings, module: str) -> bool:
    """Whether the challenge whose hooks are in ``module`` uses the executor.

    It does when a master gave it a broker (BASE 3.1 gives one only to a challenge registered
    with :data:`CAPABILITY`, and refuses to start one whose ``/version`` does not list it), or
    when a module of its package holds ``base_runner.executor`` or one of its names.
    """
    if settings.docker_broker_url is not None:
        return True
    package = module.partition(":")[0].partition(".")[0]
    public = sys.modules.get("base_runner.executor")
    return public is not None and any(
        value is public or getattr(value, "__module__", "").startswith(_OURS)
        for name, loaded in list(sys.modules.items())
        if name == package or name.startswith(f"{package}.")
        for value in list(vars(loaded).values())
    )


#: The modules whose names mean a challenge uses the executor.
_OURS = ("base_runner.executor", "base_runner._executor")


class ExecutorPart:
    """Builds the executor from the settings; :meth:`running` is the part's life."""

    def __init__(self, settings: RunnerSettings, slug: str, module: str, runtime: Runtime) -> None:
        self.settings = settings
        self.module = module
        self.runtime = runtime
        self.executor: Executor = build(settings, slug)
        self.executor.listeners.append(self._ran)
        self._problem: str | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Executor]:
        previous = install(self.executor)
        watcher: asyncio.Task[None] | None = None
        try:
            if in_use(self.settings, self.module):
                watcher = asyncio.create_task(self._watch(), name="base-runner:executor")
            yield self.executor
        finally:
            if watcher is not None:
                watcher.cancel()
                with suppress(asyncio.CancelledError):
                    await watcher
            install(previous)
            await self.executor.backend.close()

    async def _watch(self) -> None:
        # A dead runner's containers first: one killed during a run leaves its container running, and
        # the job it belonged to runs again as a new attempt. Beside this process's own runs, which
        # carry another runner label: never in their way, so startup does not wait for it.
        try:
            await self.executor.remove_stale()
        except Exception as exc:
            log.info("executor: could not look for containers left by a previous runner: %s", exc)
        while True:
            problem = await self.executor.problem()
            # The local engine is a check once the challenge has run something: a challenge tested
            # without Docker is not degraded for it. A broker is one from the start.
            if self.executor.backend.kind != "docker" or self.executor.counts.started:
                self._problem = problem
                self._publish()
            await asyncio.sleep(PROBE_INTERVAL)

    def _ran(self, outcome: str, elapsed: float | None) -> None:
        # A run that reached a container shows the backend answers; one that failed in the backend shows why not.
        if outcome in ("ok", "nonzero", "timed_out"):
            self._problem = None
        elif outcome == "backend_error":
            self._problem = self.executor.counts.last_problem
        self._publish()

    def _publish(self) -> None:
        counts, problem = self.executor.counts, self._problem
        self.runtime.publish(
            "executor",
            {
                "status": "ok" if problem is None else "unreachable",
                "error": problem,
                "backend": self.executor.backend.kind,
                "runs": {"started": counts.started, "running": counts.running, **counts.finished},
            },
        )
