"""A request that ends with changes it never committed is answered 500, never 2xx in silence.

A route that adds or flushes rows and returns without ``await session.commit()``
would be answered 2xx while its session rolls the changes back when it
closes, after the response. The runner does not commit for it: the commit
would come after the answer, and a 2xx must only follow a write that is on
disk. So this ASGI middleware looks, as the response starts, at the sessions
:meth:`~base_runner._storage.db.Database.session_dependency` opened for the request;
when one still holds uncommitted changes, it logs an error naming the route
and answers 500 with the error envelope, code ``uncommitted_changes``, instead.

It also holds back the answer of a request whose transactions began while
other requests' transactions waited for their group's COMMIT (see
:mod:`base_runner._storage.db`, "Group commit"): they could read that uncommitted
work, so they are answered once it is on disk, or, if that COMMIT failed,
503 ``commit_failed`` instead.
"""

from __future__ import annotations

import logging
from typing import Any

from .._core.wire import envelope_bytes, error_body
from . import driver
from .db import Database, holder_name, outcome, request_sessions

log = logging.getLogger("base_runner")


class UnsavedChanges:
    """ASGI middleware: a 2xx or 3xx whose request left changes uncommitted becomes a 500."""

    def __init__(self, app: Any, slug: str, db: Database) -> None:
        self.app = app
        self.slug = slug
        self.db = db

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sessions: list[Any] = []
        groups: list[driver.Group] = []
        request = f"{scope['method']} {scope['path']}"
        tokens = (request_sessions.set(sessions), holder_name.set(f"the request {request}"), driver.joined.set(groups))
        replaced = False

        async def guarded(message: dict[str, Any]) -> None:
            nonlocal replaced
            if replaced:
                return  # the route's own body, answered by the error instead
            if message["type"] == "http.response.start":
                if message["status"] < 400 and any(self.db.unsaved(session) for session in sessions):
                    replaced = True
                    await self._refuse(scope, message["status"], send)
                    return
                # A 5xx already says nothing was done (the commit's own failure among them).
                failure = await self._settled(sessions, groups) if groups and message["status"] < 500 else None
                if failure is not None:
                    replaced = True
                    await _send_error(send, 503, "commit_failed", f"challenge {self.slug}: {failure}")
                    return
            await send(message)

        try:
            await self.app(scope, receive, guarded)
        finally:
            request_sessions.reset(tokens[0])
            holder_name.reset(tokens[1])
            driver.joined.reset(tokens[2])

    async def _settled(self, sessions: list[Any], groups: list[driver.Group]) -> str | None:
        """Wait for the COMMITs of the work the request could read; why one failed, if one did."""
        try:
            if not all(group.done.done() for group in groups):
                for session in sessions:
                    # Still holding the writer (a session closes after the answer): no committer can
                    # take it, so the group is committed from here.
                    if session.bind is self.db.engine and session.in_transaction():
                        raw = await (await session.connection()).get_raw_connection()
                        await raw.dbapi_connection.settle()
            for group in groups:
                await outcome(group)
        except Exception as exc:
            detail = (
                "this request ran while other requests' writes waited for their commit, which failed "
                f"({getattr(exc, 'orig', exc)}): nothing it did was saved, and what it read may not be; retry"
            )
            log.error("challenge %s: %s", self.slug, detail)
            return detail
        return None

    async def _refuse(self, scope: dict[str, Any], status: int, send: Any) -> None:
        route = getattr(scope.get("route"), "path", scope["path"])
        detail = (
            f"{scope['method']} {route} returned {status} with changes it never committed; they are rolled back: "
            "call `await session.commit()` before returning"
        )
        log.error("challenge %s: %s", self.slug, detail)
        await _send_error(send, 500, "uncommitted_changes", f"challenge {self.slug}: {detail}")


async def _send_error(send: Any, status: int, code: str, detail: str) -> None:
    body = envelope_bytes(error_body(code, detail))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
