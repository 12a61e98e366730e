"""A request that ends with changes it never committed is answered 500, never 2xx in silence.

A route that adds or flushes rows and returns without ``await session.commit()``
would be answered 2xx while its session rolls the changes back when it
closes, after the response. The runner does not commit for it: the commit
would come after the answer, and a 2xx must only follow a write that is on
disk. So this ASGI middleware looks, as the response starts, at the sessions
:meth:`~base_runner._storage.db.Database.session_dependency` opened for the request;
when one still holds uncommitted changes, it logs an error naming the route
and answers 500 with the error envelope, code ``uncommitted_changes``, instead.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from .._core.wire import error_body
from .db import Database, holder_name, request_sessions

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
        request = f"{scope['method']} {scope['path']}"
        tokens = (request_sessions.set(sessions), holder_name.set(f"the request {request}"))
        replaced = False

        async def guarded(message: dict[str, Any]) -> None:
            nonlocal replaced
            if replaced:
                return  # the route's own body, answered by the error instead
            start = message["type"] == "http.response.start" and message["status"] < 400
            if start and any(self.db.unsaved(session) for session in sessions):
                replaced = True
                await self._refuse(scope, message["status"], send)
                return
            await send(message)

        try:
            await self.app(scope, receive, guarded)
        finally:
            request_sessions.reset(tokens[0])
            holder_name.reset(tokens[1])

    async def _refuse(self, scope: dict[str, Any], status: int, send: Any) -> None:
        route = getattr(scope.get("route"), "path", scope["path"])
        detail = (
            f"{scope['method']} {route} returned {status} with changes it never committed; they are rolled back: "
            "call `await session.commit()` before returning"
        )
        log.error("challenge %s: %s", self.slug, detail)
        body = json.dumps(error_body("uncommitted_changes", f"challenge {self.slug}: {detail}")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 500, "headers": headers})
        await send({"type": "http.response.body", "body": body})
