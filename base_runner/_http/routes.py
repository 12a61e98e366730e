"""The routes every runner serves beside the challenge's: health, readiness, status, version, metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from .._core.version import __version__
from .._core.wire import SDK_CAPABILITIES, health_body, version_body
from .._observe import metrics

if TYPE_CHECKING:
    from .assembly import Runner

#: Every check with its reasons and details, for operators; outside /internal/v1/, so it needs no token.
STATUS_PATH = "/internal/status"


def standard_routes(runner: Runner) -> APIRouter:
    """The runner's own routes for ``runner``; none is in the OpenAPI document but the challenge's."""
    router = APIRouter(include_in_schema=False)
    runtime, loaded = runner.runtime, runner.loaded

    async def health_now() -> dict[str, Any]:
        await runner.readiness.probe()
        return dict(health_body(loaded.name, loaded.version, runtime.checks(), SDK_CAPABILITIES))

    @router.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> JSONResponse:
        # 200 while the process lives, whatever the checks say: Swarm's health
        # probe restarts on anything else, and restarting cures no drift.
        return JSONResponse(await health_now(), status_code=503 if runtime.fatal is not None else 200)

    @router.api_route("/ready", methods=["GET", "HEAD"])
    async def ready() -> JSONResponse:
        body = await health_now()
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @router.get(STATUS_PATH)
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

    @router.api_route("/version", methods=["GET", "HEAD"])
    async def version() -> dict[str, Any]:
        return dict(
            version_body(
                slug=loaded.name,
                distribution=loaded.challenge.distribution,
                version=loaded.version,
                runner_version=__version__,
                capabilities=runner.capabilities,
            )
        )

    @router.get(metrics.PATH)
    async def metrics_text(request: Request) -> Response:
        return await metrics.endpoint(runner.metrics, runner.auth.check_token, request)

    return router
