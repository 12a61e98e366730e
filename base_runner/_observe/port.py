"""The separate metrics port (``CHALLENGE_METRICS_PORT``): ``GET /metrics`` without a token, for a scraper on the node.

A second uvicorn server on the app's event loop, not prometheus-client's
threaded server: the state collector reads the runtime's states, the weights
cache and the database's URL, which only the loop's thread changes, so every
scrape runs where the token-guarded one does. The cost is that a stalled loop
answers neither; the watchdog reports a stall in the log and on ``/ready``
instead.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, make_asgi_app

from .._core.errors import ConfigError

if TYPE_CHECKING:
    import asyncio

    import uvicorn

    from .metrics import Metrics

log = logging.getLogger("base_runner")

#: The one path of the metrics port, where Prometheus looks by default.
PORT_PATH = "/metrics"


class MetricsPort:
    """The separate metrics port: ``GET /metrics`` with no token, every other path 404.

    The socket is bound when this is made, so that ``serve`` refuses a port
    in use (:class:`~base_runner.ConfigError`, exit 2) before the
    database is opened or any challenge code runs; it answers from
    :meth:`start` until :meth:`stop` closes it.

    :param http: uvicorn's ``http`` protocol: ``serve`` passes the one with
        its connection limits, so a slow client cannot hold this port either.
    """

    def __init__(self, host: str, port: int, http: type[asyncio.Protocol] | str = "auto") -> None:
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
            self._socket = socket.create_server((host, port), family=family)
        except OSError as exc:
            # create_server's message repeats the address; the errno's own text does not.
            reason = os.strerror(exc.errno) if exc.errno and not isinstance(exc, socket.gaierror) else str(exc)
            raise ConfigError(
                f"CHALLENGE_METRICS_PORT: cannot listen on {_url(host, port, '')}: {reason}; "
                "free the port, choose another one, or fix CHALLENGE_METRICS_HOST"
            ) from None
        self.url = _url(host, port, PORT_PATH)
        self._http = http
        self._server: uvicorn.Server | None = None

    async def start(self, metrics: Metrics) -> None:
        """Answer scrapes of ``metrics`` on the bound socket."""
        import uvicorn

        config = uvicorn.Config(
            _port_app(metrics.registry),
            http=self._http,
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            timeout_graceful_shutdown=1,
        )
        config.load()
        server = uvicorn.Server(config)
        # startup() and shutdown() rather than serve(): serve() would take over
        # the process's signal handlers, which belong to the main server, and
        # set the lifespan (off here) that startup() expects.
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[self._socket])
        self._server = server
        log.info("metrics on %s, without a token: publish this port to the node only", self.url)

    async def stop(self) -> None:
        """Close the port and its connections; the socket too if it never served."""
        if self._server is not None:
            await self._server.shutdown(sockets=[self._socket])
            self._server = None
        self._socket.close()


def _url(host: str, port: int, path: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{path}" if path else f"{shown}:{port}"


def _port_app(registry: CollectorRegistry) -> Callable[..., Awaitable[None]]:
    """prometheus-client's ASGI exposition (text or OpenMetrics, gzip as asked) on :data:`PORT_PATH` alone."""
    from starlette.responses import PlainTextResponse

    exposition = make_asgi_app(registry)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] != PORT_PATH:
            answer = PlainTextResponse(f"not found: this port serves GET {PORT_PATH} only\n", status_code=404)
        elif scope["method"] not in ("GET", "HEAD"):
            answer = PlainTextResponse(
                f"method not allowed: {PORT_PATH} answers GET\n", status_code=405, headers={"Allow": "GET, HEAD"}
            )
        else:
            await exposition(scope, receive, send)
            return
        await answer(scope, receive, send)

    return app
