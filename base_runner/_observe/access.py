"""One access line and the request metrics for every HTTP request the app answers.

The line names the route template, never the raw path, so it carries no
hotkey and groups like the metrics do. A cached weights answer is logged at
debug level unless ``CHALLENGE_ACCESS_LOG=true`` asks for it: the master and the
public read it often, and a line per answer costs a measurable share of that
path's throughput (docs/performance.md, "The access line", gives the figures).
``CHALLENGE_ACCESS_LOG=false`` logs every answer below 500 at debug level.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import TYPE_CHECKING

from starlette.types import Scope

from .._core.logs import ACCESS_LOGGER, write

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
    """Counts, times and logs each HTTP request once it is answered: a :data:`~base_runner._core.correlation.Observer`.

    :param metrics: where each request is counted.
    :param fast_paths: exact paths answered without routing (the weights endpoints).
    :param quiet_paths: paths whose successful answers log at debug level, not info.
    :param enabled: ``False``: every answer below 500 logs at debug level, whatever its path.
    """

    def __init__(
        self, metrics: Metrics, fast_paths: Collection[str], quiet_paths: Collection[str], enabled: bool = True
    ):
        self._metrics = metrics
        self._fast = frozenset(fast_paths)
        self._quiet = frozenset(quiet_paths)
        self._enabled = enabled

    def __call__(self, scope: Scope, status: int, seconds: float, request_id: str) -> None:
        method = scope["method"]
        route = route_of(scope, self._fast)
        self._metrics.request(route, method, status, seconds)
        if status >= 500:
            level = logging.WARNING
        elif not self._enabled or (status < 400 and scope["path"] in self._quiet):
            level = logging.DEBUG
        else:
            level = logging.INFO
        milliseconds = round(seconds * 1000, 3)
        fields = {"method": method, "route": route, "status": status, "duration_ms": milliseconds}
        # The context that held the correlation id has ended by now: it is passed on.
        write(log, level, f"{method} {route} {status} {milliseconds:.1f}ms", fields, request_id)
