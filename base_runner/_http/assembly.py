"""The one place the runner is put together: every entry point calls :func:`build_runner`.

``serve``, ``serve --reload``, the test fixtures, ``check`` and the bench all
get the same :class:`Runner`: its parts built from the settings here and
nowhere else, started in the order of :meth:`Runner.parts` and stopped in
reverse, and its app (:func:`~base_runner._http.app.create_app`).

To add a part (a job queue, an executor): build it in :meth:`Runner.__init__`
from the settings, and add one :class:`Part` to the list :meth:`Runner.parts`
returns, at the place that says what must be running before it starts and what
must still run until it stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import storage
from .._core.auth import MasterAuth, token_problem
from .._core.events import Events
from .._core.runtime import Runtime
from .._core.settings import RunnerSettings, database_url
from .._core.version import __version__
from .._core.wire import MASTER_CAPABILITIES, SDK_CAPABILITIES
from .._executor.part import CAPABILITY, ExecutorPart, in_use
from .._jobs.scheduler import Scheduler
from .._jobs.tasks import tasks_of
from .._observe.executor_metrics import watch_executor
from .._observe.loopwatch import LoopWatchdog
from .._observe.metrics import Metrics
from .._observe.port import MetricsPort
from .._plugins.plugins import HOOK_SHAPES, LoadedChallenge
from .._plugins.routes import routers_of
from .._push.running import PushConfig, start_pushing
from .._storage.datadir import DataDirLock
from .._storage.db import Database, database, has_wal_reset_bug, sqlite_version
from .._storage.dbfile import DatabaseFile
from .._weights.weights import Computed, WeightsCache, call_get_weights, measured
from .app import create_app
from .readiness import Readiness

if TYPE_CHECKING:
    from fastapi import APIRouter

    from .._observe.tracing import Tracing

log = logging.getLogger("base_runner")


def bind(settings: RunnerSettings, db: Database = database) -> None:
    """Point the database and the storage helpers at the settings' data dir."""
    db.configure(database_url(settings), settings.synchronous)
    storage.configure(settings.data_dir)


@dataclass(frozen=True)
class Part:
    """One part of the runner: ``run()`` is entered at startup, in the declared order, and left at shutdown."""

    name: str
    run: Callable[[], AbstractAsyncContextManager[object]]

    @classmethod
    def of(
        cls,
        name: str,
        start: Callable[[], Awaitable[object]] | None = None,
        stop: Callable[[], Awaitable[object]] | None = None,
    ) -> Part:
        """A part from a start and a stop. The stop runs even when the start failed: it frees what the start took."""

        @asynccontextmanager
        async def run() -> AsyncIterator[None]:
            try:
                if start is not None:
                    await start()
                yield
            finally:
                if stop is not None:
                    await stop()

        return cls(name, run)

    @classmethod
    def task(cls, name: str, work: Callable[[], Coroutine[Any, Any, None]]) -> Part:
        """A part that is a task on the loop, from startup until it is cancelled at shutdown."""

        @asynccontextmanager
        async def run() -> AsyncIterator[None]:
            task = asyncio.create_task(work(), name=name)
            try:
                yield
            finally:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task

        return cls(name, run)


class Runner:
    """One challenge's runner: its parts, their order, and the app that serves them.

    :param dbfile: the database file, checked before it is opened when the runner owns the process.
    :param tracing: the process's tracing, when an OTLP endpoint is set (``serve`` only).
    :param metrics_port: the bound metrics port (``serve`` only, when ``CHALLENGE_METRICS_PORT`` is set).
    :param http: uvicorn's HTTP protocol, with the connection limits (``serve`` only).
    """

    def __init__(
        self,
        loaded: LoadedChallenge,
        settings: RunnerSettings,
        *,
        db: Database,
        dbfile: DatabaseFile,
        routers: list[APIRouter],
        tracing: Tracing | None = None,
        metrics_port: MetricsPort | None = None,
        http: type[asyncio.Protocol] | str = "auto",
    ) -> None:
        slug = loaded.name
        self.loaded, self.settings, self.db, self.dbfile, self.routers = loaded, settings, db, dbfile, routers
        self.tracing, self.metrics_port, self.http = tracing, metrics_port, http
        self.runtime = Runtime(slug)
        self.runtime.mark("challenge", "starting", ok=False)
        self.auth = MasterAuth.of(settings, slug)
        self.metrics = Metrics(self.runtime, loaded.version)
        #: Each get_weights computation, for the metrics and the traces.
        self.computed: Events[Computed] = Events()
        self.computed.subscribe(self.metrics.weights_computed)
        weights = measured(lambda: call_get_weights(loaded), settings.weights_timeout, self.runtime, self.computed)
        if tracing is not None:
            weights = tracing.traced_weights(weights, self.computed)
            tracing.instrument(db)
        self.cache = WeightsCache(
            slug,
            compute=weights,
            generation=lambda: db.generation,
            ttl=settings.weights_ttl,
            timeout=settings.weights_timeout,
        )
        self.metrics.watch(self.cache, db)
        self.jobs = Scheduler(
            tasks_of(loaded),
            db,
            concurrency=settings.jobs_concurrency,
            lease=settings.jobs_lease,
            grace=settings.jobs_grace,
            retention=settings.jobs_retention,
            # As a dead worker does (run_worker): the process exits non-zero, and Swarm restarts it.
            on_death=lambda reason: self.runtime.fail(reason, check="jobs"),
        )
        self.metrics.watch_jobs(self.jobs)
        self.executor = ExecutorPart(settings, slug, loaded.challenge.module, self.runtime)
        watch_executor(self.metrics.registry, self.executor.executor)
        #: What /version says the runner can do: the executor's only when the challenge uses it.
        self.capabilities: tuple[str, ...] = MASTER_CAPABILITIES + SDK_CAPABILITIES
        if in_use(settings, loaded.challenge.module):
            self.capabilities += (CAPABILITY,)
        self.runtime.probes["jobs"] = self._jobs_problem
        # A stopped scheduler loses no job (they wait in the table): it stops no write.
        self.runtime.declare("jobs", guards_writes=False)
        self.readiness = Readiness(self.runtime, db, dbfile, self.auth)
        self.app = create_app(self)

    def parts(self) -> list[Part]:
        """Every part, in the order they start; they stop in reverse."""
        settings, readiness = self.settings, self.readiness
        parts = [
            # First in, last out: closing the database makes spans too.
            Part.of("tracing", stop=None if self.tracing is None else self.tracing.shutdown),
            # Before the database, so that a scraper sees a slow startup (the challenge part "starting").
            Part.of("metrics port", *self._metrics_port()),
            Part("database metrics", self._observing_database),
            Part.of("database", self._open_database, self._close_database),
            # Before the challenge's lifespan, which may enqueue.
            Part.of("jobs table", self.jobs.prepare),
            Part.of("weights cache", stop=self.cache.close),
            Part.task(f"{self.loaded.name}:disk", lambda: readiness.watch_disk(settings.disk_check_interval)),
            Part.task(f"{self.loaded.name}:watchdog", LoopWatchdog(self.runtime, settings.loop_stall).run),
            Part.of("schema", lambda: readiness.check_schema(at_startup=True)),
            # Before the challenge's lifespan, whose workers may run containers; stopped after it.
            Part("executor", self.executor.running),
            Part("challenge", self._challenge_lifespan),
        ]
        push = PushConfig.of(settings)
        if push is not None:
            # After the challenge's own lifespan, so get_weights has what it needs; stopped before it.
            parts.append(
                Part(
                    "pusher",
                    lambda: start_pushing(
                        push, self.loaded.name, self.cache, self.auth, self.runtime, self.metrics.push_stepped
                    ),
                )
            )
        # Last in, first out: jobs stop (and are put back) while what their tasks use still runs.
        parts.append(Part("jobs", self.jobs.running))
        return parts

    def stop_soon(self) -> None:
        """Told as the server starts to stop, before the requests drain and the parts stop: the jobs' grace starts."""
        self.jobs.stop_soon()

    def _jobs_problem(self) -> str | None:
        jobs = self.jobs
        queue: dict[str, dict[str, int]] = {}
        for (task, state), count in sorted(jobs.depth.items()):
            queue.setdefault(task, {})[state] = count
        self.runtime.details["jobs"] = {
            "queue": queue,
            "oldest_due_seconds": {task: round(age, 3) for task, age in sorted(jobs.oldest_due.items())},
        }
        return jobs.problem()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Start every part in order; on leaving, stop them in reverse (those that started, when startup failed)."""
        version = sqlite_version()
        log.info(
            "challenge %s %s on base-runner %s, SQLite %s", self.loaded.name, self.loaded.version, __version__, version
        )
        if (missing := token_problem(self.auth)) is not None:
            # A newcomer's first /health says unhealthy with no reason in its body: say why once, here.
            log.warning(
                "%s. Until then /health answers unhealthy and /ready false: the master cannot pull the weights "
                "(miners' requests are still served). On a laptop, any token will do: CHALLENGE_SHARED_TOKEN=dev-token",
                missing,
            )
        if has_wal_reset_bug(version):
            # Not a warning: one writer connection, and the data dir's lock keeps a second runner out.
            log.debug("SQLite %s has the WAL-reset bug; one writer connection per process rules it out", version)
        runtime = self.runtime
        async with AsyncExitStack() as stack:
            for part in self.parts():
                await stack.enter_async_context(part.run())
            runtime.started = True
            runtime.mark("challenge", "started", ok=True)
            yield
            runtime.started = False
            runtime.mark("challenge", "stopping", ok=False)

    def _metrics_port(self) -> tuple[Callable[[], Awaitable[None]] | None, Callable[[], Awaitable[None]] | None]:
        port = self.metrics_port
        if port is None:
            return None, None
        return (lambda: port.start(self.metrics)), port.stop

    @asynccontextmanager
    async def _observing_database(self) -> AsyncIterator[None]:
        # The database outlives the runner (the fixtures build one per test): stop watching it at shutdown.
        stop = self.metrics.observe_database(self.db)
        try:
            yield
        finally:
            stop()

    async def _open_database(self) -> None:
        created = await self.db.create_all()
        if created:
            log.info("created tables: %s", ", ".join(created))
        await self.db.ping()
        self.dbfile.opened()
        self.runtime.mark("database", "ok", ok=True)

    async def _close_database(self) -> None:
        await self.db.close()
        self.dbfile.stopped()

    @asynccontextmanager
    async def _challenge_lifespan(self) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for context in self.loaded.pm.hook.lifespan(app=self.app):
                if context is not None and not hasattr(context, "__aenter__"):
                    raise TypeError(
                        f"lifespan returned {type(context).__name__}, not an async context manager; "
                        f"write it as {HOOK_SHAPES['lifespan']}"
                    )
                if context is not None:
                    await stack.enter_async_context(context)
            yield


def build_runner(
    loaded: LoadedChallenge, settings: RunnerSettings, *, serve: bool = False, db: Database = database
) -> Runner:
    """The runner of ``loaded`` on ``settings``; ``db`` must already be configured (:func:`bind`).

    ``serve`` is for a process that serves the data dir (``serve``, its
    ``--reload`` child, the bench): the data dir is locked for the life of the
    process and its database file checked before anything opens it; tracing
    starts when an OTLP endpoint is set; the metrics port is bound (a port in
    use is exit 2, not a half-started runner); uvicorn gets the connection
    limits. The test fixtures and ``check`` run the same runner without them.

    Raises :class:`~base_runner.ConfigError` for a data dir, file or port that
    cannot be used, and :class:`~base_runner._core.errors.PluginError` when the
    challenge's routers are not routers or claim a reserved path.
    """
    dbfile = DatabaseFile.of(settings)
    if not serve:
        return Runner(loaded, settings, db=db, dbfile=dbfile, routers=routers_of(loaded))
    from .._observe.tracing import start as start_tracing
    from .connections import ConnectionLimits, open_files_cap, protocol_class

    DataDirLock(settings.data_dir).acquire(settings.lock_wait)  # held until the process exits
    dbfile.check_before_open()
    http = protocol_class(
        ConnectionLimits(
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            header_timeout=settings.header_timeout,
            max_connections=open_files_cap(settings.max_connections),
        )
    )
    metrics_port = None
    if settings.metrics_port is not None:
        metrics_port = MetricsPort(settings.metrics_host or settings.host, settings.metrics_port, http)
    routers = routers_of(loaded)
    return Runner(
        loaded,
        settings,
        db=db,
        dbfile=dbfile,
        routers=routers,
        tracing=start_tracing(loaded.name, loaded.version),
        metrics_port=metrics_port,
        http=http,
    )
