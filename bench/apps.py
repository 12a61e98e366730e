"""The baselines (bare ASGI apps with nothing between uvicorn and the answer), and the runner's app.

Each is an app factory for ``uvicorn --factory``, configured by environment
variables that :mod:`bench.servers` sets.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite3

Scope = dict[str, Any]


def bare() -> Any:
    """Answer every request with the bytes of the file ``BENCH_BODY`` (``{"status":"ok"}`` without one)."""
    path = os.environ.get("BENCH_BODY")
    body = Path(path).read_bytes() if path else b'{"status":"ok"}'
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def _valid(data: Any) -> bool:
    if not isinstance(data, dict):
        return False
    hotkey, score = data.get("hotkey"), data.get("score")
    return (
        isinstance(hotkey, str) and 0 < len(hotkey) <= 128 and type(score) is int and score >= 0  # noqa: E721
    )


def writer() -> sqlite3.Connection:
    """One raw sqlite3 connection to ``BENCH_DATABASE`` with the runner's writer settings (``BENCH_PRAGMAS``)."""
    import sqlite3  # here, so that the bare app's start does not pay for it

    conn = sqlite3.connect(os.environ["BENCH_DATABASE"], isolation_level=None, check_same_thread=False)
    for pragma in filter(None, os.environ.get("BENCH_PRAGMAS", "").split(";")):
        conn.execute(pragma)
    return conn


def insert(conn: sqlite3.Connection, hotkey: str, score: int) -> int:
    """Insert one submission in its own ``BEGIN IMMEDIATE`` transaction; return its id."""
    conn.execute("BEGIN IMMEDIATE")
    row = conn.execute("INSERT INTO submissions (hotkey, score) VALUES (?, ?)", (hotkey, score))
    conn.execute("COMMIT")
    return row.lastrowid or 0


def raw_writes() -> Any:
    """``POST /submissions`` as a bare ASGI app over one raw sqlite3 connection, on the event loop."""
    conn = writer()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["method"] == "GET":  # /health, for the harness to see it started
            status, answer = 200, b'{"status":"ok"}'
        elif scope["path"] != "/submissions":
            status, answer = 404, b'{"detail":"Not Found"}'
        else:
            body, more = b"", True
            while more:
                message = await receive()
                body, more = body + message.get("body", b""), message.get("more_body", False)
            data = json.loads(body)
            if _valid(data):
                row_id = insert(conn, data["hotkey"], data["score"])
                status, answer = (
                    201,
                    json.dumps({"id": row_id, "hotkey": data["hotkey"], "score": data["score"]}).encode(),
                )
            else:
                status, answer = 422, b'{"detail":"invalid"}'
        headers = [(b"content-length", str(len(answer)).encode()), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return app


def runner() -> Any:
    """The runner's app for the example challenge on ``BENCH_DATA_DIR``, built as ``base-runner serve`` does.

    For serving it under uvicorn options that ``serve`` does not expose.
    """
    from base_runner._cli.options import start
    from base_runner._http.assembly import build_runner
    from base_runner._http.server import asgi

    settings, loaded = start("example", data_dir=Path(os.environ["BENCH_DATA_DIR"]))
    return asgi(build_runner(loaded, settings, serve=True))
