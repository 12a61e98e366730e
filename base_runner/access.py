"""One access line and the request metrics for every HTTP request the app answers.

The line names the route template, never the raw path, so it carries no
hotkey and groups like the metrics do. A cached weights answer is logged at
debug level unless ``CHALLENGE_ACCESS_LOG`` asks for it: the master and the
public read it often, and a line per answer costs a measurable share of that
path's throughput (docs/operating.md gives the figures).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .logs import ACCESS_LOGGER

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger(ACCESS_LOGGER)

#: The route label of a request no route matched.
UNMATCHED = "unmatched"


def route_of(scope: Scope, fast_paths: Collection[str]) -> str:
    """The template of the route that answered (``/submissions/{hotkey}``); :data:`UNMATCHED` when none did."""
    route = scope.get("route")
    if route is not None:
        return getattr(route, "path", None) or UNMATCHED
    path = scope.get("path", "")
    return path if path in fast_paths else UNMATCHED


class Observed:
    """ASGI wrapper around ``app``: counts, times and logs each HTTP request once it is answered.

    :param app: the app to observe.
    :param metrics: where each request is counted.
    :param fast_paths: exact paths answered without routing (the weights endpoints).
    :param quiet_paths: paths whose successful answers log at debug level, not info.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, fast_paths: Collection[str], quiet_paths: Collection[str]):
        self._app = app
        self._metrics = metrics
        self._fast = frozenset(fast_paths)
        self._quiet = frozenset(quiet_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        answer: dict[str, Any] = {"status": 500, "headers": ()}

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["headers"] = message.get("headers", ())
            await send(message)

        try:
            await self._app(scope, receive, sending)
        finally:
            seconds = time.perf_counter() - started
            status = answer["status"]
            route = route_of(scope, self._fast)
            self._metrics.request(route, scope["method"], status, seconds)
            level = logging.DEBUG if status < 400 and scope["path"] in self._quiet else logging.INFO
            if status >= 500:
                level = logging.WARNING
            if log.isEnabledFor(level):
                self._log(level, scope["method"], route, status, seconds, answer["headers"])

    @staticmethod
    def _log(level: int, method: str, route: str, status: int, seconds: float, headers: Any) -> None:
        # The id the response carries: the request's, even where the context that held it has ended.
        request_id = next((value.decode("latin-1") for name, value in headers if name.lower() == b"x-request-id"), None)
        milliseconds = round(seconds * 1000, 3)
        log.log(
            level,
            "%s %s %d %.1fms",
            method,
            route,
            status,
            milliseconds,
            extra={"method": method, "route": route, "status": status, "duration_ms": milliseconds}
            | ({"correlation_id": request_id} if request_id else {}),
        )
