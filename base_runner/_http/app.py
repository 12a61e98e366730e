"""The FastAPI application: the runner's standard routes around one loaded challenge, behind its layers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .._core.correlation import CorrelationMiddleware
from .._jobs.routes import operator_router
from .._observe import metrics
from .._observe.access import Observed
from .._storage.storable import guard_routes
from .._storage.unsaved import UnsavedChanges
from .._weights.routes import weights_endpoints
from .errors import exception_handlers
from .limits import BodyLimits, RequestLimits
from .openapi import document_runner_answers
from .routes import STATUS_PATH, standard_routes

if TYPE_CHECKING:
    from .assembly import Runner

#: Methods that never write, which a runner that is not ready still serves (as the SDK does).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: The paths that say what state the runner is in: never refused for not being ready.
DISCOVERY_PATHS = frozenset({"/health", "/ready", "/version", STATUS_PATH})

#: A layer of the middleware stack: given the app inside it, the app with the layer around it.
Layer = Callable[[ASGIApp], ASGIApp]
WriteGate = Callable[[], Awaitable[Response | None]]


class RunnerApp(FastAPI):
    """FastAPI inside ``layers`` (outermost first), with ``GET`` on the weights paths answered before its routing.

    The weights endpoints are also ordinary routes, which answer the other
    methods (405) and any caller that goes through the router. ``write_gate``
    refuses requests that may write while the runner is not ready: it returns
    the refusal, or ``None`` to let the request through.
    """

    def __init__(
        self,
        runner: Runner,
        *,
        layers: Sequence[Layer],
        fast_routes: Mapping[str, ASGIApp],
        write_gate: WriteGate,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        # For the dependencies challenge routes use (verified_hotkey checks the master's token with
        # master_auth), run_worker (runtime) and the test fixtures (challenge).
        self.state.runner = runner
        self.state.runtime = runner.runtime
        self.state.challenge = runner.loaded
        self.state.master_auth = runner.auth
        self.state.jobs = runner.jobs  # run_jobs and job_state, the jobs fixtures
        self.fast_routes = dict(fast_routes)
        self._write_gate = write_gate
        for path, endpoint in fast_routes.items():
            self.router.add_route(path, endpoint, methods=["GET"], include_in_schema=False)  # type: ignore[arg-type]
        entry: ASGIApp = self._dispatch
        for layer in reversed(layers):
            entry = layer(entry)
        self._entry = entry

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
            elif method not in SAFE_METHODS and scope["path"] not in DISCOVERY_PATHS:
                refusal = await self._write_gate()
                if refusal is not None:
                    await refusal(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)


def create_app(runner: Runner) -> RunnerApp:
    """The app of ``runner``: its layers, the runner's routes, then the challenge's."""
    settings, tracing, auth = runner.settings, runner.tracing, runner.auth
    fast = weights_endpoints(runner.cache, auth)
    # Cached weights answers log at debug level unless CHALLENGE_ACCESS_LOG asks (their cost: docs/operating.md).
    observed = Observed(
        runner.metrics, fast, quiet_paths=() if settings.access_log else fast, enabled=settings.access_log is not False
    )
    body_limits = BodyLimits(max_bytes=settings.max_body_bytes, timeout=settings.body_timeout)
    # The weights and metrics endpoints check the master's token themselves (the metrics without a slug).
    skip_auth = frozenset([*fast, metrics.PATH])
    # Every request's way in, outermost first: the fast routes too, so every answer carries the
    # correlation id and no request skips its limits; the observer (request metrics, access line)
    # sees the limits' refusals.
    layers: list[Layer] = [
        *([] if tracing is None else [lambda inner: tracing.wrap(inner, fast)]),  # the span times all of it
        lambda inner: CorrelationMiddleware(inner, observer=observed),
        lambda inner: RequestLimits(inner, body_limits, auth, skip_auth=skip_auth),
    ]
    app = RunnerApp(
        runner,
        layers=layers,
        fast_routes=fast,
        write_gate=runner.readiness.write_gate,
        # Inside FastAPI's own stack, where a route's sessions are known: a 2xx never hides a lost write.
        middleware=[Middleware(UnsavedChanges, slug=runner.loaded.name, db=runner.db)],
        exception_handlers=exception_handlers(runner),
        title=f"{runner.loaded.name} (base-runner)",
        version=runner.loaded.version,
        lifespan=lambda _app: runner.running(),
        # The runner observes requests itself (its metrics, access line and tracing). FastAPI's native
        # telemetry (0.165 and later) would start a second server span inside the runner's, and,
        # whenever OpenTelemetry is installed, look its providers up on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.include_router(standard_routes(runner))
    app.include_router(operator_router(runner.jobs))
    for router in runner.routers:
        guard_routes(router, settings.max_json_depth)
        app.include_router(router)
    document_runner_answers(app)
    return app
