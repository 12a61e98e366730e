"""The correlation id of the request being served: the caller's ``X-Request-ID`` when sane, else a new one.

:data:`correlation_id` holds it for the whole request, so that a log line
or an error envelope written anywhere below the middleware names the
request it belongs to; the response echoes it in ``X-Request-ID``.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The correlation id of the request in progress; ``None`` outside a request.
correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)

HEADER = b"x-request-id"
#: The SDK's ``ErrorResponse.correlation_id`` allows at most 128 characters.
MAX_LENGTH = 128
# Letters, digits and the punctuation of UUIDs, ULIDs and trace ids: nothing
# that could split a log line, a header or a shell command.
_SANE = re.compile(rb"[A-Za-z0-9._:-]{1,%d}" % MAX_LENGTH)

#: Told of each answered HTTP request: its scope, status (500 when none was sent), seconds and correlation id.
Observer = Callable[[Scope, int, float, str], None]


# Drawn once per process (and again in a forked child).
_prefix: str
_counter: Iterator[int]


def _new_process() -> None:
    global _prefix, _counter
    _prefix = os.urandom(8).hex()
    _counter = itertools.count()


_new_process()
# A forked child (a challenge worker) would otherwise hand out its parent's ids.
os.register_at_fork(after_in_child=_new_process)


def new_id() -> str:
    """A fresh id: 32 hex digits, 16 random ones drawn once per process and a counter.

    Unique across processes and restarts like a UUID4, at a fraction of the
    cost of a system call per request (docs/performance.md). It is not a
    secret: callers may send an id of their choosing, and none grants anything.
    """
    return f"{_prefix}{next(_counter):016x}"


def accept(value: bytes | None) -> str:
    """``value`` when it is a sane id (at most 128 of ``A-Za-z0-9._:-``), else a new one."""
    if value is not None and _SANE.fullmatch(value):
        return value.decode("ascii")
    return new_id()


def current() -> str:
    """The id of the request in progress; a new one outside a request, so an envelope always has one."""
    return correlation_id.get() or new_id()


class CorrelationMiddleware:
    """Pure ASGI: sets :data:`correlation_id` for each HTTP request and echoes it in ``X-Request-ID``.

    Pure ASGI rather than FastAPI middleware, so that it also wraps the
    weights endpoints :class:`~base_runner._http.app.RunnerApp` answers before
    FastAPI, at the cost of one header scan and one context-variable set.
    ``observer``, when set, is told of each request once it is answered:
    the request metrics and access line ride on this layer's wrapper of
    ``send`` rather than adding a layer of their own to every request.
    """

    def __init__(self, app: ASGIApp, observer: Observer | None = None) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope["headers"]:
            if name == HEADER:
                given = value
                break
        ident = accept(given)
        echoed = (HEADER, ident.encode("ascii"))
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # A new list: the weights endpoint reuses its header list across responses.
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        observer = self.observer
        started = time.perf_counter()
        token = correlation_id.set(ident)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            correlation_id.reset(token)
            if observer is not None:
                observer(scope, status, time.perf_counter() - started, ident)
