"""Bounds on connections and request heads, in uvicorn's HTTP protocol.

What uvicorn's own protocols enforce, and what they leave open (uvicorn
0.3x to 0.5x): ``timeout_keep_alive`` closes a connection idle *after* a
response, but nothing bounds the time to send the first request's headers,
so a connection that sends nothing, or half a header, is held forever;
httptools (the parser uvicorn picks when installed, twice h11's speed) has
no limit on the size or the number of headers; h11's
``h11_max_incomplete_event_size`` bounds their size (answered 400, not
431) but not their number or time; ``limit_concurrency`` answers 503 once
that many connections are *open*, idle ones included, so a slowloris
attacker who holds that many makes every request a 503: it is the lockout,
not a defence, and is not used. :class:`BoundedHttpToolsProtocol` adds the
missing bounds to the httptools protocol.
"""

from __future__ import annotations

import asyncio
import http
import logging
import resource
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .limits import RequestRefused

log = logging.getLogger("base_runner")

#: File descriptors kept free for the database, logs and secret files when connections are capped by the limit.
RESERVED_FILES = 64
_HEAD_END = b"\r\n\r\n"


@dataclass(frozen=True)
class ConnectionLimits:
    """What a connection may do before its request reaches the app."""

    #: Bytes of a request line and headers together.
    max_header_bytes: int
    #: Header lines of one request.
    max_headers: int
    #: Seconds to send a request's line and headers, from the connection's start or the previous response.
    header_timeout: float
    #: Open connections; beyond it the oldest one still waiting for its headers is closed.
    max_connections: int


def open_files_cap(wanted: int) -> int:
    """``wanted`` connections, or fewer when the open-file limit cannot hold them beside :data:`RESERVED_FILES`.

    Raises the soft limit to the hard one first: at the limit, accepting a
    connection fails and nobody gets in, which is what a flood of idle
    connections aims for.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or wanted + RESERVED_FILES <= soft:
        return wanted
    capped = max(1, soft - RESERVED_FILES)
    log.warning(
        "CHALLENGE_MAX_CONNECTIONS is %d but the open-file limit is %d: at most %d connections are kept open",
        wanted,
        soft,
        capped,
    )
    return capped


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with :attr:`limits` on header size, count and time, and on connections.

    A subclass sets :attr:`limits` (see :func:`protocol_class`).
    """

    limits: ConnectionLimits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting_head = True
        self._head_bytes = 0
        self._head_tail = b""
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._opened_at = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._opened_at = self.loop.time()
        self._await_head()
        if len(self.connections) > self.limits.max_connections:
            self._shed()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _shed(self) -> None:
        """Make room: close the connection that has waited longest for its request's head, or refuse this one."""
        waiting = [
            other
            for other in self.connections
            if other is not self and isinstance(other, BoundedHttpToolsProtocol) and other._idle()
        ]
        if waiting:
            oldest = min(waiting, key=lambda other: other._opened_at)
            oldest._stop_head_timer()
            oldest.transport.close()
            return
        self._refuse(
            RequestRefused(
                503,
                "too_many_connections",
                f"{self.limits.max_connections} connections are open and busy (CHALLENGE_MAX_CONNECTIONS)",
            )
        )

    def _idle(self) -> bool:
        return self._awaiting_head and not self._refused and not self.transport.is_closing()

    def _await_head(self) -> None:
        self._awaiting_head = True
        self._head_bytes = 0
        self._head_tail = b""
        self._stop_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._awaiting_head or self.transport.is_closing():
            return
        if self._head_bytes == 0:
            self.transport.close()  # an idle connection: nothing to answer
            return
        self._refuse(
            RequestRefused(
                408,
                "header_timeout",
                f"the request's headers did not arrive within {self.limits.header_timeout:g} s "
                "(CHALLENGE_HEADER_TIMEOUT)",
            )
        )

    def _refuse(self, refused: RequestRefused) -> None:
        """Answer ``refused`` straight on the transport and close it; the request never reaches the app."""
        self._refused = True
        self._stop_head_timer()
        if self.transport.is_closing():
            return
        headers, body = refused.response_parts()
        status = http.HTTPStatus(refused.status_code)
        head = [f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode()]
        head += [name + b": " + value + b"\r\n" for name, value in headers]
        self.transport.write(b"".join(head) + b"\r\n" + body)
        self.transport.close()

    def _too_large_head(self) -> None:
        self._refuse(
            RequestRefused(
                431,
                "headers_too_large",
                f"the request line and headers are larger than {self.limits.max_header_bytes} bytes "
                "(CHALLENGE_MAX_HEADER_BYTES)",
            )
        )

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._awaiting_head:
            # Count up to the end of the head only: the same read may carry the start of the body.
            joined = self._head_tail + data
            end = joined.find(_HEAD_END)
            self._head_bytes += len(data) if end < 0 else max(0, end + len(_HEAD_END) - len(self._head_tail))
            self._head_tail = joined[-(len(_HEAD_END) - 1) :]
            if self._head_bytes > self.limits.max_header_bytes:
                self._too_large_head()
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        self._header_count = 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refused:
            return
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refuse(
                RequestRefused(
                    431,
                    "too_many_headers",
                    f"the request has more than {self.limits.max_headers} headers (CHALLENGE_MAX_HEADERS)",
                )
            )
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._awaiting_head = False
        self._stop_head_timer()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        queued = bool(self.pipeline)
        super().on_response_complete()
        if not queued and not self.transport.is_closing():
            # The next request's head is timed from here; uvicorn's keep-alive timeout closes an idle one first.
            self._await_head()


def protocol_class(limits: ConnectionLimits) -> type[BoundedHttpToolsProtocol]:
    """The protocol class to hand uvicorn as ``http=``, bound to ``limits``."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"limits": limits})
