"""Bounds on what one request may send, enforced before the challenge sees it.

The connection-level limits (header size, count and time, open connections)
live in :mod:`base_runner._http.connections`, in the HTTP protocol; this ASGI layer
holds the ones that need the parsed request: the body's size and time,
duplicated credentials, the master's token on ``/internal/v1/`` paths,
checked before a byte of the body is read, and the owner's token on the
routes that depend on :class:`~base_runner.OwnerAuth`, checked before their
body is read (:func:`~base_runner._core.auth.check_owner_first`), then a route's own
:class:`MaxBody`, a lower cap on its body, enforced as the global one is.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._core.auth import MasterAuth, check_owner_first, route_dependencies
from .._core.correlation import HEADER as CORRELATION_HEADER
from .._core.correlation import correlation_id
from .._core.secrets import AuthFailure
from .._core.wire import envelope_bytes, error_body

#: Paths only the master may call; their bodies are read only once its token is checked.
AUTHENTICATED_PREFIX = "/internal/v1/"
#: Headers that say who is calling: a proxy that appends a second one must not change the outcome.
CREDENTIAL_HEADERS = frozenset(
    {
        b"authorization",
        b"x-owner-token",
        b"x-base-challenge-slug",
        b"x-platform-challenge-slug",
        b"x-base-verified-hotkey",
        b"x-platform-verified-hotkey",
    }
)


@dataclass(frozen=True)
class BodyLimits:
    """How much, and for how long, a request may send its body."""

    max_bytes: int
    timeout: float


class RequestRefused(HTTPException):
    """A request refused for what it sent, not for what it asked: a status and an error body.

    An :class:`HTTPException`, so that FastAPI passes it on when it is raised
    from a body read inside a route, instead of making it a 400.
    """

    def __init__(self, status_code: int, error: str, detail: str) -> None:
        super().__init__(status_code, detail, headers={"connection": "close"})
        self.error = error

    def response_parts(self) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """Headers and body of the answer; the connection is closed, as the rest of the body is not read."""
        envelope = error_body(self.error, self.detail)
        body = envelope_bytes(envelope)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        if correlation_id.get() is None:
            # Refused by the connection layer, below the correlation middleware: nothing else echoes the body's id.
            headers.append((CORRELATION_HEADER, envelope["correlation_id"].encode()))
        return headers, body

    async def answer(self, send: Send) -> None:
        headers, body = self.response_parts()
        await send({"type": "http.response.start", "status": self.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class MaxBody:
    """A dependency that caps its route's request body below ``CHALLENGE_MAX_BODY_BYTES``::

        @router.post("/reviews", dependencies=[Depends(MaxBody(4096))])

    The cap is enforced as the global one is, before the route reads the body:
    a ``Content-Length`` over it is refused before a byte is read, and a body
    that runs past it is cut off while it streams in, answered ``413
    body_too_large`` in the error envelope, the connection closed. It applies
    wherever the route's dependencies hold it (the route's own, its router's,
    ``include_router(..., dependencies=[...])`` or a sub-dependency); when
    several do, the lowest wins. The owner token (:class:`~base_runner.OwnerAuth`)
    is checked first.
    """

    def __init__(self, max_bytes: int) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"MaxBody takes a number of bytes >= 0, not {max_bytes!r}")
        self.max_bytes = max_bytes

    def __repr__(self) -> str:
        return f"MaxBody({self.max_bytes})"

    async def __call__(self) -> None:
        # Nothing left to do once FastAPI runs it: the body was bounded while it was read.
        return None


def too_large(max_bytes: int, route_limit: bool = False) -> RequestRefused:
    where = "this route's limit (MaxBody)" if route_limit else "CHALLENGE_MAX_BODY_BYTES"
    return RequestRefused(413, "body_too_large", f"the request body is larger than {max_bytes} bytes ({where})")


def too_slow(limits: BodyLimits) -> RequestRefused:
    return RequestRefused(
        408, "body_timeout", f"the request body did not arrive within {limits.timeout:g} s (CHALLENGE_BODY_TIMEOUT)"
    )


def duplicate_credentials(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The first credential header that ``headers`` carry more than once."""
    seen: set[bytes] = set()
    for name, _ in headers:
        if name in CREDENTIAL_HEADERS:
            if name in seen:
                return name.decode()
            seen.add(name)
    return None


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP parser refuses such a request before it gets here
    return None


class RequestLimits:
    """ASGI middleware: refuse what a request sends beyond :class:`BodyLimits`, and unproven callers early.

    ``skip_auth`` are ``/internal/v1/`` paths that check the master's token
    themselves and read no body (the weights endpoint).
    """

    def __init__(self, app: ASGIApp, limits: BodyLimits, auth: MasterAuth, skip_auth: frozenset[str]) -> None:
        self._app = app
        self._limits = limits
        self._auth = auth
        self._skip_auth = skip_auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        try:
            self._check_head(scope)
        except RequestRefused as refused:
            await refused.answer(send)
            return
        except AuthFailure as failure:
            await RequestRefused(failure.status_code, failure.code, failure.detail).answer(send)
            return
        started = answered = False

        async def tracking_send(message: Message) -> None:
            nonlocal started, answered
            started = True
            await send(message)
            answered = message["type"] == "http.response.body" and not message.get("more_body", False)

        try:
            await self._app(scope, self._bounded(scope, receive), tracking_send)
        except RequestRefused as refused:
            # Raised from a read outside FastAPI's handlers (an endpoint of the runner's own).
            if started:
                raise
            await refused.answer(send)
        except Exception:
            # Starlette re-raises what its error handler has already logged and answered (a 500);
            # passed on, uvicorn would log it again and drop the connection under a complete answer.
            if not answered:
                raise

    def _check_head(self, scope: Scope) -> None:
        headers = scope["headers"]
        duplicate = duplicate_credentials(headers)
        if duplicate is not None:
            raise RequestRefused(400, "duplicate_header", f"send the {duplicate} header once")
        length = declared_length(headers)
        if length is not None and length > self._limits.max_bytes:
            raise too_large(self._limits.max_bytes)
        path = scope["path"]
        if path.startswith(AUTHENTICATED_PREFIX) and path not in self._skip_auth:
            self._auth.check(Headers(raw=headers))

    def _bounded(self, scope: Scope, receive: Receive) -> Receive:
        """``receive``, raising :class:`RequestRefused` once the body runs past its size or time.

        Its first call, made once the router matched a route, refuses a
        caller without the owner token that route depends on.
        """
        limits = self._limits
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.timeout
        received = 0
        started = complete = False
        cap, route_limit = limits.max_bytes, False

        async def bounded_receive() -> Message:
            nonlocal received, started, complete, cap, route_limit
            if not started:
                started = True
                try:
                    check_owner_first(scope)
                except AuthFailure as failure:
                    raise RequestRefused(failure.status_code, failure.code, failure.detail) from None
                route_caps = [limit.max_bytes for limit in route_dependencies(scope, MaxBody)]
                if route_caps and min(route_caps) < cap:
                    cap, route_limit = min(route_caps), True
                    length = declared_length(scope["headers"])
                    if length is not None and length > cap:
                        raise too_large(cap, route_limit)
            if complete:
                # After the body, a read waits for the client to go away, as long as a response streams.
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise too_slow(limits) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise too_large(cap, route_limit)
                complete = not message.get("more_body", False)
            return message

        return bounded_receive
