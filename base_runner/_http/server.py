"""The runner under uvicorn, as ``serve`` and each child of ``serve --reload`` run it."""

from __future__ import annotations

import logging
import signal
import socket
import traceback
from collections.abc import Awaitable
from types import FrameType
from typing import TYPE_CHECKING, Any

from .._core.errors import describe

if TYPE_CHECKING:
    from .assembly import Runner

log = logging.getLogger("base_runner")

#: Seconds uvicorn lets requests finish at shutdown: under Swarm's default 10 s stop grace period,
#: leaving time to checkpoint the WAL.
GRACEFUL_SHUTDOWN = 8


class NeverStarted(Exception):
    """The app's startup failed; uvicorn has logged why."""


def run(runner: Runner, log_level: int, sockets: list[socket.socket] | None = None) -> str | None:
    """Serve ``runner`` until SIGTERM or Ctrl-C, on ``settings``' address or on ``sockets``.

    Returns the fatal fault that stopped it, ``None`` after a clean stop.
    Raises :class:`NeverStarted` when the app did not start.
    """
    import uvicorn

    settings = runner.settings
    server = uvicorn.Server(
        uvicorn.Config(
            asgi(runner),
            host=settings.host,
            port=settings.port,
            lifespan="on",
            # base_runner._core.logs is the one logging setup, and base_runner.access the one access line.
            log_config=None,
            log_level=log_level,
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
            http=runner.http,
            timeout_keep_alive=settings.keep_alive_timeout,  # type: ignore[arg-type]  # a float works
        )
    )
    runtime = runner.runtime
    runtime.on_fatal = lambda: setattr(server, "should_exit", True)
    exit_on = server.handle_exit

    def handle_exit(sig: int, frame: FrameType | None) -> None:
        exit_on(sig, frame)
        runner.stop_soon()  # what must wind down (the jobs' grace) does so while uvicorn drains the requests

    server.handle_exit = handle_exit  # type: ignore[method-assign]
    # uvicorn re-raises SIGTERM/SIGINT to the previous handler once it has shut
    # down gracefully; without one here the process would die of the signal
    # (exit 143) instead of reporting a clean stop.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, lambda *_: None)
    server.run(sockets=sockets)
    if not server.started:
        raise NeverStarted
    return runtime.fatal


def asgi(runner: Runner) -> Any:
    """The ASGI callable ``serve`` hands to uvicorn.

    It runs the app's lifespan itself so that a startup fault reaches the
    log as one line naming the challenge (the traceback only at debug
    level), where Starlette would print the whole traceback.
    """
    app, slug = runner.app, runner.loaded.name

    async def step(phase: str, action: Awaitable[object], send: Any) -> bool:
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
