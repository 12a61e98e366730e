"""How the app answers an exception: always the SDK 1.0 error envelope, never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from .._core.correlation import current
from .._core.wire import ApiError, body_problem, code_for_status, error_response, validation_detail
from .._storage.db import WritesRefused
from .._storage.dbfile import disk_fault
from .limits import RequestRefused

if TYPE_CHECKING:
    from .assembly import Runner

log = logging.getLogger("base_runner")

Handler = Callable[[Request, Any], Awaitable[Response]]


async def _refused(request: Request, error: ApiError) -> Response:
    return error.response()


async def _http_error(request: Request, exc: HTTPException) -> Response:
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


async def _refused_input(request: Request, refused: RequestRefused) -> Response:
    headers, body = refused.response_parts()
    return Response(body, status_code=refused.status_code, headers={k.decode(): v.decode() for k, v in headers})


async def _invalid(request: Request, exc: RequestValidationError) -> Response:
    # Which fields failed, never the input itself: FastAPI's own 422
    # echoes each bad input, a 100 MB body included.
    problem = body_problem(exc.errors(), exc.body, request.headers.get("content-type"))
    return error_response(422, "validation_failed", problem or validation_detail(exc.errors()))


async def _writes_refused(request: Request, exc: WritesRefused) -> Response:
    return error_response(503, "writes_refused", str(exc))


def exception_handlers(runner: Runner) -> dict[Any, Handler]:
    """The handlers FastAPI is built with, by exception class."""
    slug = runner.loaded.name

    async def database_fault(request: Request, exc: DBAPIError) -> Response:
        fault = disk_fault(exc, runner.dbfile)
        if fault is None:
            return await unhandled(request, exc)
        status, code, detail = fault
        log.error("challenge %s: %s %s: %s", slug, request.method, request.url.path, detail)
        # A full volume clears once the space probe sees room again; a failing disk does not heal.
        runner.runtime.problems["disk:space" if status == 507 else "disk:failed"] = detail
        return error_response(status, code, detail)

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

    return {
        ApiError: _refused,
        HTTPException: _http_error,
        RequestRefused: _refused_input,
        RequestValidationError: _invalid,
        WritesRefused: _writes_refused,
        DBAPIError: database_fault,
        Exception: unhandled,
    }
