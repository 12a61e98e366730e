"""The FastAPI application: the runner's standard routes around one loaded challenge."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import __version__, storage
from .._core.auth import MasterAuth, token_problem
from .._core.correlation import CorrelationMiddleware, current
from .._core.errors import describe
from .._core.logs import never_log
from .._core.runtime import Runtime
from .._core.settings import RunnerSettings, database_url
from .._core.wire import (
    MASTER_CAPABILITIES,
    SDK_CAPABILITIES,
    ApiError,
    body_problem,
    code_for_status,
    error_response,
    health_body,
    validation_detail,
    version_body,
)
from .._executor.part import CAPABILITY, ExecutorPart, in_use
from .._jobs.routes import operator_router
from .._jobs.scheduler import Scheduler
from .._jobs.tasks import tasks_of
from .._observe import metrics
from .._observe.access import Observed
from .._observe.executor_metrics import watch_executor
from .._observe.loopwatch import LoopWatchdog
from .._plugins.plugins import HOOK_SHAPES, LoadedChallenge, routers_of
from .._push.pusher import start_pushing
from .._storage import schema
from .._storage.db import Database, WritesRefused, database, has_wal_reset_bug, sqlite_version
from .._storage.dbfile import DatabaseFile, disk_fault
from .._storage.storable import guard_routes
from .._storage.unsaved import UnsavedChanges
from .._weights.routes import weights_endpoints
from .._weights.weights import WeightsCache, call_get_weights
from .limits import BodyLimits, RequestLimits, RequestRefused
from .openapi import document_runner_answers

if TYPE_CHECKING:
    from .._observe.tracing import Tracing

log = logging.getLogger("base_runner")

#: Methods that never write, which a runner that is not ready still serves (as the SDK does).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: The paths that say what state the runner is in: never refused for not being ready.
DISCOVERY_PATHS = frozenset({"/health", "/ready", "/version", "/internal/status"})
#: Every check with its reasons and details, for operators; outside /internal/v1/, so it needs no token.
STATUS_PATH = "/internal/status"
#: Seconds a health probe waits for the database before calling it unhealthy.
PROBE_TIMEOUT = 3.0
#: A write refused for not being ready probes again at most this often, in seconds.
GATE_REPROBE_INTERVAL = 1.0


def bind(settings: RunnerSettings, db: Database = database) -> None:
    """Point the database and the storage helpers at the settings' data dir."""
    db.configure(database_url(settings), settings.synchronous)
    storage.configure(settings.data_dir)


class RunnerApp(FastAPI):
    """FastAPI, behind the correlation id, with ``GET`` on the weights paths answered before its routing.

    The weights endpoints are also ordinary routes, which answer the other
    methods (405) and any caller that goes through the router. ``write_gate``
    (set by :func:`create_app`) refuses requests that may write while the
    runner is not ready: it returns the refusal, or ``None`` to let the
    request through.
    """

    def __init__(
        self, *, fast_routes: dict[str, ASGIApp], limits: BodyLimits, master_auth: MasterAuth, **options: Any
    ) -> None:
        super().__init__(**options)
        self.fast_routes = fast_routes
        self.write_gate: Callable[[], Awaitable[Response | None]] | None = None
        for path, endpoint in fast_routes.items():
            self.router.add_route(path, endpoint, methods=["GET"], include_in_schema=False)
        # Outside everything, the fast routes included: every answer carries the correlation id,
        # and no request skips its limits. The weights and metrics endpoints check the
        # master's token themselves (the metrics without a slug).
        # Its observer (the request metrics and access line) sees refusals too.
        self.correlation = CorrelationMiddleware(
            RequestLimits(self._dispatch, limits, master_auth, skip_auth=frozenset([*fast_routes, metrics.PATH]))
        )
        self._entry: ASGIApp = self.correlation

    def observe(self, wrap: Callable[[ASGIApp], ASGIApp]) -> None:
        """Put ``wrap(entry)`` in front of every request, outside the limits, so that refusals count too."""
        self._entry = wrap(self._entry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._entry(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method = scope["method"]
            if method == "GET":
                endpoint = self.fast_routes.get(scope["path"])
                if endpoint is not None:
                    await endpoint(scope, receive, send)
                    return
            elif method not in SAFE_METHODS and self.write_gate is not None and scope["path"] not in DISCOVERY_PATHS:
                refusal = await self.write_gate()
                if refusal is not None:
                    await refusal(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)


def create_app(
    loaded: LoadedChallenge,
    settings: RunnerSettings,
    db: Database = database,
    dbfile: DatabaseFile | None = None,
    tracing: Tracing | None = None,
    metrics_port: metrics.MetricsPort | None = None,
) -> FastAPI:
    """Build the app for ``loaded``; ``db`` must already be configured.

    ``dbfile`` is the database file ``serve`` checked before starting; by
    default the one ``settings`` name, unchecked. ``tracing``, when given,
    traces requests, ``get_weights`` and ``db``'s SQL, and is shut down with
    the app. ``metrics_port``, bound by ``serve``, answers from the start
    of the lifespan until the database is closed.

    Raises :class:`~base_runner._core.errors.PluginError` when the challenge's
    routers are not routers or claim a reserved path.
    """
    slug = loaded.name
    routers = routers_of(loaded)
    scheduler = Scheduler(
        tasks_of(loaded),
        db,
        concurrency=settings.jobs_concurrency,
        lease=settings.jobs_lease,
        grace=settings.jobs_grace,
        retention=settings.jobs_retention,
    )
    runtime = Runtime(slug)
    runtime.mark("challenge", "starting", ok=False)
    if settings.shared_token is not None:
        never_log(settings.shared_token.get_secret_value())
    auth = MasterAuth(slug=slug, token=settings.shared_token, token_file=settings.shared_token_file)
    measured = metrics.Metrics(runtime, loaded.version)
    weights = measured.timed_weights(lambda: call_get_weights(loaded), settings.weights_timeout)
    if tracing is not None:
        weights = tracing.traced_weights(weights, runtime)
        tracing.instrument(db)
    cache = WeightsCache(
        slug,
        compute=weights,
        generation=lambda: db.generation,
        ttl=settings.weights_ttl,
        timeout=settings.weights_timeout,
    )
    measured.watch(cache, db)
    measured.watch_jobs(scheduler)
    executor = ExecutorPart(settings, slug, loaded.challenge.module, runtime)
    executor_capability = (CAPABILITY,) if in_use(settings, loaded.challenge.module) else ()
    watch_executor(measured.registry, executor.executor)

    dbfile = dbfile or DatabaseFile.of(settings)

    def file_problem() -> str | None:
        reason = dbfile.identity_problem()
        if reason is not None and runtime.fatal is None:
            db.refusal = f"{reason}; the runner takes no more writes and stops"
            runtime.fail(reason)
        return reason

    runtime.probes["disk:file"] = file_problem
    runtime.probes["disk:space"] = dbfile.space_problem

    async def watch_disk() -> None:
        while True:
            await asyncio.sleep(settings.disk_check_interval)
            runtime.probe()

    async def check_schema(at_startup: bool) -> None:
        runtime.report("schema", None)
        for number, drift in enumerate(await schema.check(db.read_engine)):
            if drift.blocking:
                runtime.report("schema", drift.line, key=str(number))
            if at_startup:
                log.log(logging.ERROR if drift.blocking else logging.WARNING, "schema drift: %s", drift.line)
        drifted = any(key.startswith("schema:") for key in runtime.problems)
        runtime.mark("schema", "drift" if drifted else "ok", ok=not drifted)

    async def probe() -> None:
        """Bring the checks that can change on their own up to date: the parts' probes, schema drift, the database."""
        runtime.probe()
        if runtime.failing("schema"):
            await check_schema(at_startup=False)  # the operator may have applied the fix since
        try:
            await asyncio.wait_for(db.ping(), PROBE_TIMEOUT)
        except Exception as exc:
            shown = f"no answer in {PROBE_TIMEOUT:g} s" if isinstance(exc, TimeoutError) else describe(exc)
            runtime.report("database", f"the database does not answer: {shown}")
        else:
            runtime.report("database", None)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        version = sqlite_version()
        log.info("challenge %s %s on base-runner %s, SQLite %s", slug, loaded.version, __version__, version)
        if (missing := token_problem(auth)) is not None:
            # A newcomer's first /health says unhealthy with no reason in its body: say why once, here.
            log.warning(
                "%s. Until then /health answers unhealthy and /ready false: the master cannot pull the weights "
                "(miners' requests are still served). On a laptop, any token will do: CHALLENGE_SHARED_TOKEN=dev-token",
                missing,
            )
        if has_wal_reset_bug(version):
            # Not a warning: one writer connection, and the data dir's lock keeps a second runner out.
            log.debug("SQLite %s has the WAL-reset bug; one writer connection per process rules it out", version)
        watcher: asyncio.Task[None] | None = None
        watchdog: asyncio.Task[None] | None = None
        if metrics_port is not None:
            # First, so that a scraper sees a slow startup (the challenge part "starting") as it happens.
            await metrics_port.start(measured)
        stop_counting = measured.count_transactions(db)
        try:
            created = await db.create_all()
            if created:
                log.info("created tables: %s", ", ".join(created))
            await db.ping()
            await scheduler.prepare()  # before the challenge's lifespan, which may enqueue
            await asyncio.to_thread(dbfile.opened)
            watcher = asyncio.create_task(watch_disk(), name=f"{slug}:disk")
            watchdog = asyncio.create_task(LoopWatchdog(runtime, settings.loop_stall).run(), name=f"{slug}:watchdog")
            runtime.mark("database", "ok", ok=True)
            await check_schema(at_startup=True)
            async with AsyncExitStack() as stack:
                # Before the challenge's lifespan, whose workers may run containers; stopped after it.
                await stack.enter_async_context(executor.running())
                for context in loaded.pm.hook.lifespan(app=app):
                    if context is not None and not hasattr(context, "__aenter__"):
                        raise TypeError(
                            f"lifespan returned {type(context).__name__}, not an async context manager; "
                            f"write it as {HOOK_SHAPES['lifespan']}"
                        )
                    if context is not None:
                        await stack.enter_async_context(context)
                if settings.master_base_url is not None:
                    # After the challenge's own lifespan, so get_weights has what it needs; stopped before it.
                    await stack.enter_async_context(
                        start_pushing(settings, slug, cache, auth, runtime, measured.push_step)
                    )
                # Last in, first out: jobs stop (and are put back) while what their tasks use still runs.
                await stack.enter_async_context(scheduler.running())
                runtime.started = True
                runtime.mark("challenge", "started", ok=True)
                yield
                runtime.started = False
                runtime.mark("challenge", "stopping", ok=False)
        finally:
            for task in (watcher, watchdog):
                if task is not None:
                    task.cancel()
            await cache.close()
            stop_counting()
            await db.close()
            await asyncio.to_thread(dbfile.stopped)
            if metrics_port is not None:
                await metrics_port.stop()
            if tracing is not None:
                await tracing.shutdown()  # last: closing the database makes spans too

    app = RunnerApp(
        fast_routes=weights_endpoints(cache, auth),
        limits=BodyLimits(max_bytes=settings.max_body_bytes, timeout=settings.body_timeout),
        master_auth=auth,
        title=f"{slug} (base-runner)",
        version=loaded.version,
        lifespan=lifespan,
        **({} if tracing is None else tracing.fastapi_options),
    )
    app.state.runtime = runtime
    app.add_middleware(UnsavedChanges, slug=slug, db=db)
    runtime.probes["auth:token"] = lambda: token_problem(auth)

    def jobs_problem() -> str | None:
        queue: dict[str, dict[str, int]] = {}
        for (task, state), count in sorted(scheduler.depth.items()):
            queue.setdefault(task, {})[state] = count
        runtime.details["jobs"] = {
            "queue": queue,
            "oldest_due_seconds": {task: round(age, 3) for task, age in sorted(scheduler.oldest_due.items())},
        }
        return scheduler.problem()

    runtime.probes["jobs"] = jobs_problem
    # A stopped scheduler loses no job (they wait in the table): it stops no write.
    runtime.declare("jobs", guards_writes=False)
    app.state.jobs = scheduler
    # Without its token the master cannot pull: not ready for it, but no reason to refuse a miner's write.
    runtime.declare("auth", guards_writes=False)
    app.state.metrics = measured
    # Cached weights answers log at debug level unless CHALLENGE_ACCESS_LOG asks (their cost: docs/operating.md).
    quiet = () if settings.access_log else app.fast_routes
    app.correlation.observer = Observed(
        measured, app.fast_routes, quiet_paths=quiet, enabled=settings.access_log is not False
    )
    if tracing is not None:
        app.observe(lambda entry: tracing.wrap(entry, app.fast_routes))  # outermost: the span times all of it
    app.state.challenge = loaded
    app.state.weights = cache
    # For the dependencies challenge routes use: verified_hotkey checks the master's token with it.
    app.state.master_auth = auth

    @app.exception_handler(ApiError)
    async def refused(request: Request, error: ApiError) -> Response:
        return error.response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        # Challenge routes' own HTTPExceptions keep their status, headers and
        # detail; the code comes from the status. A structured detail, which
        # the envelope's string cannot hold, passes through as FastAPI sends it.
        if not isinstance(exc.detail, str):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        detail = exc.detail
        # Starlette's own 404 and 405 carry only the status phrase: say what was asked.
        if exc.status_code in (404, 405) and detail in ("Not Found", "Method Not Allowed"):
            detail = f"{detail.lower()}: {request.method} {request.url.path[:200]}"
        return error_response(exc.status_code, code_for_status(exc.status_code), detail, headers=exc.headers)

    @app.exception_handler(RequestRefused)
    async def refused_input(request: Request, refused: RequestRefused) -> Response:
        headers, body = refused.response_parts()
        return Response(body, status_code=refused.status_code, headers={k.decode(): v.decode() for k, v in headers})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        # Which fields failed, never the input itself: FastAPI's own 422
        # echoes each bad input, a 100 MB body included.
        problem = body_problem(exc.errors(), exc.body, request.headers.get("content-type"))
        return error_response(422, "validation_failed", problem or validation_detail(exc.errors()))

    @app.exception_handler(WritesRefused)
    async def writes_refused(request: Request, exc: WritesRefused) -> Response:
        return error_response(503, "writes_refused", str(exc))

    @app.exception_handler(DBAPIError)
    async def database_fault(request: Request, exc: DBAPIError) -> Response:
        fault = disk_fault(exc, dbfile)
        if fault is None:
            return await unhandled(request, exc)
        status, code, detail = fault
        log.error("challenge %s: %s %s: %s", slug, request.method, request.url.path, detail)
        # A full volume clears once the space probe sees room again; a failing disk does not heal.
        runtime.problems["disk:space" if status == 507 else "disk:failed"] = detail
        return error_response(status, code, detail)

    @app.exception_handler(Exception)
    async def unhandled(request: Request, exc: Exception) -> Response:
        log.error(
            "challenge %s: %s %s raised %s: %s (correlation id %s)",
            slug,
            request.method,
            request.url.path,
            type(exc).__name__,
            exc,
            current(),
            exc_info=exc,
        )
        return error_response(
            500, "internal_error", f"challenge {slug} failed on this request; its log names the fault with this id"
        )

    last_gate_probe = 0.0

    async def write_gate() -> Response | None:
        nonlocal last_gate_probe
        blockers = runtime.write_blockers()
        if blockers and time.monotonic() - last_gate_probe >= GATE_REPROBE_INTERVAL:
            last_gate_probe = time.monotonic()
            await probe()
            blockers = runtime.write_blockers()
        if not blockers:
            return None
        return error_response(
            503,
            "runtime_not_ready",
            f"challenge {slug} is not ready ({', '.join(blockers)}), so it takes no writes; GET /ready says when it is",
            headers={"Retry-After": "5"},
        )

    app.write_gate = write_gate

    async def health_now() -> dict[str, Any]:
        await probe()
        return health_body(slug, loaded.version, runtime.checks(), SDK_CAPABILITIES)

    @app.api_route("/health", methods=["GET", "HEAD"], include_in_schema=False)
    async def health() -> JSONResponse:
        # 200 while the process lives, whatever the checks say: Swarm's health
        # probe restarts on anything else, and restarting cures no drift.
        return JSONResponse(await health_now(), status_code=503 if runtime.fatal is not None else 200)

    @app.api_route("/ready", methods=["GET", "HEAD"], include_in_schema=False)
    async def ready() -> JSONResponse:
        body = await health_now()
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @app.get(STATUS_PATH, include_in_schema=False)
    async def status() -> dict[str, Any]:
        # HealthResponse forbids any field it does not know, so the reasons
        # and the parts' details are here: not public (masters' proxies
        # refuse /internal/*), and asked for by no master.
        body = await health_now()
        return {
            **{k: body[k] for k in ("status", "slug", "ready")},
            "checks": {
                c["name"]: {
                    "status": c["status"],
                    "required": c["required"],
                    "reasons": runtime.failing(c["name"]),
                    **runtime.details.get(c["name"], {}),
                }
                for c in body["checks"]
            },
        }

    @app.api_route("/version", methods=["GET", "HEAD"], include_in_schema=False)
    async def version() -> dict[str, Any]:
        return version_body(
            slug=slug,
            distribution=loaded.challenge.distribution,
            version=loaded.version,
            runner_version=__version__,
            capabilities=MASTER_CAPABILITIES + SDK_CAPABILITIES + executor_capability,
        )

    @app.get(metrics.PATH, include_in_schema=False)
    async def metrics_text(request: Request) -> Any:
        return await metrics.endpoint(measured, auth.check_token, request)

    app.include_router(operator_router(scheduler))
    for router in routers:
        guard_routes(router, settings.max_json_depth)
        app.include_router(router)
    document_runner_answers(app)
    return app


def serving(app: FastAPI) -> Any:
    """The ASGI callable ``serve`` hands to uvicorn.

    It runs the app's lifespan itself so that a startup fault reaches the
    log as one line naming the challenge (the traceback only at debug
    level), where Starlette would print the whole traceback.
    """
    slug = app.state.runtime.challenge

    async def step(phase: str, action: Any, send: Any) -> bool:
        try:
            await action
        except Exception as exc:
            log.debug("%s of %s failed:\n%s", phase, slug, traceback.format_exc())
            message = f"challenge {slug}: {phase} failed: {describe(exc)}"
            await send({"type": f"lifespan.{phase}.failed", "message": message})
            return False
        await send({"type": f"lifespan.{phase}.complete"})
        return True

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        context = app.router.lifespan_context(app)
        await receive()  # lifespan.startup
        if await step("startup", context.__aenter__(), send):
            await receive()  # lifespan.shutdown
            await step("shutdown", context.__aexit__(None, None, None), send)

    return asgi
