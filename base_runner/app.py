"""The FastAPI application: the runner's standard routes around one loaded challenge."""

from __future__ import annotations

import asyncio
import logging
import math
import traceback
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Receive, Scope, Send

from . import __version__, schema, storage
from .auth import AuthFailure, MasterAuth, token_problem
from .db import Database, WritesRefused, database, has_wal_reset_bug, sqlite_version
from .dbfile import DatabaseFile, disk_fault
from .errors import describe
from .limits import BodyLimits, RequestLimits, RequestRefused
from .loopwatch import LoopWatchdog
from .openapi import document_runner_answers
from .plugins import HOOK_SHAPES, LoadedChallenge, routers_of
from .push import start_pushing
from .runtime import Runtime
from .settings import RunnerSettings, database_url
from .storable import guard_routes
from .unsaved import UnsavedChanges
from .weights import WeightsCache, call_get_weights
from .weights_routes import weights_endpoints

log = logging.getLogger("base_runner")

API_VERSION = "1.0"
CAPABILITIES = ("get_weights", "proxy_routes", "async_sqlalchemy")


def bind(settings: RunnerSettings, db: Database = database) -> None:
    """Point the database and the storage helpers at the settings' data dir."""
    db.configure(database_url(settings), settings.synchronous)
    storage.configure(settings.data_dir)


class RunnerApp(FastAPI):
    """FastAPI, with ``GET`` on the weights paths answered before its middleware and routing.

    The endpoints are also ordinary routes, which answer the other methods
    (405) and any caller that goes through the router.
    """

    def __init__(
        self, *, fast_routes: dict[str, ASGIApp], limits: BodyLimits, master_auth: MasterAuth, **options: Any
    ) -> None:
        super().__init__(**options)
        self.fast_routes = fast_routes
        for path, endpoint in fast_routes.items():
            self.router.add_route(path, endpoint, methods=["GET"], include_in_schema=False)
        # Outside everything, the fast routes included: no request skips its limits.
        self._entry = RequestLimits(self._dispatch, limits, master_auth, skip_auth=frozenset(fast_routes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._entry(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            endpoint = self.fast_routes.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _encodable(text: str) -> str:
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def create_app(
    loaded: LoadedChallenge, settings: RunnerSettings, db: Database = database, dbfile: DatabaseFile | None = None
) -> FastAPI:
    """Build the app for ``loaded``; ``db`` must already be configured.

    ``dbfile`` is the database file ``serve`` checked before starting; by
    default the one ``settings`` name, unchecked.

    Raises :class:`~base_runner.errors.PluginError` when the challenge's
    routers are not routers or claim a reserved path.
    """
    slug = loaded.name
    routers = routers_of(loaded)
    runtime = Runtime(slug)
    auth = MasterAuth(slug=slug, token=settings.shared_token, token_file=settings.shared_token_file)
    cache = WeightsCache(
        slug,
        compute=lambda: call_get_weights(loaded),
        generation=lambda: db.generation,
        ttl=settings.weights_ttl,
        timeout=settings.weights_timeout,
    )

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
        for key in [key for key in runtime.problems if key.startswith("schema:")]:
            del runtime.problems[key]
        for number, drift in enumerate(await schema.check(db.read_engine)):
            if drift.blocking:
                runtime.problems[f"schema:{number}"] = drift.line
            if at_startup:
                log.log(logging.ERROR if drift.blocking else logging.WARNING, "schema drift: %s", drift.line)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        version = sqlite_version()
        log.info("challenge %s %s on base-runner %s, SQLite %s", slug, loaded.version, __version__, version)
        if has_wal_reset_bug(version):
            # Not a warning: one writer connection, and the data dir's lock keeps a second runner out.
            log.debug("SQLite %s has the WAL-reset bug; one writer connection per process rules it out", version)
        watcher: asyncio.Task[None] | None = None
        watchdog: asyncio.Task[None] | None = None
        try:
            created = await db.create_all()
            if created:
                log.info("created tables: %s", ", ".join(created))
            await db.ping()
            dbfile.opened()
            watcher = asyncio.create_task(watch_disk(), name=f"{slug}:disk")
            watchdog = asyncio.create_task(LoopWatchdog(runtime, settings.loop_stall).run(), name=f"{slug}:watchdog")
            await check_schema(at_startup=True)
            async with AsyncExitStack() as stack:
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
                    await stack.enter_async_context(start_pushing(settings, slug, cache, auth, runtime))
                runtime.started = True
                yield
                runtime.started = False
        finally:
            for task in (watcher, watchdog):
                if task is not None:
                    task.cancel()
            await cache.close()
            await db.close()
            dbfile.stopped()

    app = RunnerApp(
        fast_routes=weights_endpoints(cache, auth),
        limits=BodyLimits(max_bytes=settings.max_body_bytes, timeout=settings.body_timeout),
        master_auth=auth,
        title=f"{slug} (base-runner)",
        version=loaded.version,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.add_middleware(UnsavedChanges, slug=slug, db=db)
    runtime.probes["auth:token"] = lambda: token_problem(auth)
    app.state.challenge = loaded
    app.state.weights = cache
    # For the dependencies challenge routes use: verified_hotkey checks the master's token with it.
    app.state.master_auth = auth

    @app.exception_handler(AuthFailure)
    async def refused(request: Request, failure: AuthFailure) -> JSONResponse:
        return JSONResponse(failure.body(), status_code=failure.status_code)

    @app.exception_handler(RequestRefused)
    async def refused_input(request: Request, refused: RequestRefused) -> Response:
        headers, body = refused.response_parts()
        return Response(body, status_code=refused.status_code, headers={k.decode(): v.decode() for k, v in headers})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own 422 echoes each bad input; a NaN or infinity sent in a
        # body would make that answer unencodable, a 500 instead of a 422.
        # A lone surrogate in an echoed string is not UTF-8 either: it is shown escaped.
        shown = jsonable_encoder(
            exc.errors(), custom_encoder={float: lambda v: v if math.isfinite(v) else str(v), str: _encodable}
        )
        return JSONResponse({"detail": shown}, status_code=422)

    @app.exception_handler(WritesRefused)
    async def writes_refused(request: Request, exc: WritesRefused) -> JSONResponse:
        return JSONResponse({"error": "writes_refused", "detail": str(exc)}, status_code=503)

    @app.exception_handler(DBAPIError)
    async def database_fault(request: Request, exc: DBAPIError) -> JSONResponse:
        fault = disk_fault(exc, dbfile)
        if fault is None:
            return await unhandled(request, exc)
        status, code, detail = fault
        log.error("challenge %s: %s %s: %s", slug, request.method, request.url.path, detail)
        # A full volume clears once the space probe sees room again; a failing disk does not heal.
        runtime.problems["disk:space" if status == 507 else "disk:failed"] = detail
        return JSONResponse({"error": code, "detail": detail}, status_code=status)

    @app.exception_handler(Exception)
    async def unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "challenge %s: %s %s raised %s: %s",
            slug,
            request.method,
            request.url.path,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        return JSONResponse({"error": "internal_error", "challenge": slug}, status_code=500)

    @app.get("/health", include_in_schema=False)
    async def health() -> JSONResponse:
        status = "ok" if runtime.fatal is None else "error"
        return JSONResponse(
            {"status": status, "slug": slug, "version": loaded.version}, status_code=200 if status == "ok" else 503
        )

    @app.get("/version", include_in_schema=False)
    async def version() -> dict[str, Any]:
        return {
            "api_version": API_VERSION,
            "challenge_version": loaded.version,
            "sdk_version": __version__,
            "capabilities": list(CAPABILITIES),
        }

    @app.get("/ready", include_in_schema=False)
    async def ready() -> JSONResponse:
        runtime.probe()
        if any(key.startswith("schema:") for key in runtime.problems):
            await check_schema(at_startup=False)  # the operator may have applied the fix since
        reasons = runtime.reasons()
        if not reasons:
            try:
                await db.ping()
            except Exception as exc:
                reasons = [f"the database does not answer: {describe(exc)}"]
        # The optional parts (the pusher), shown but never deciding readiness.
        checks = {"checks": runtime.checks} if runtime.checks else {}
        if reasons:
            return JSONResponse({"status": "not_ready", "reasons": reasons, **checks}, status_code=503)
        return JSONResponse({"status": "ready", **checks})

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
