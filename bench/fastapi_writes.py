"""Baselines: the example's ``POST /submissions`` route, same FastAPI and models, on other database layers.

Only the database layer differs from the runner's, so the differences are
what the runner's sessions cost. (No ``from __future__ import
annotations`` here: FastAPI reads the routes' annotations at run time.)
"""

import os
from typing import Annotated, Any

from .apps import insert, writer


def _api() -> Any:
    from fastapi import FastAPI

    api = FastAPI()

    @api.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return api


def app() -> Any:
    """Over one raw sqlite3 connection on the event loop, for ``uvicorn --factory``."""
    from example_challenge.routes import NewSubmission, Recorded

    conn = writer()
    api = _api()

    @api.post("/submissions", status_code=201)
    async def record_submission(body: NewSubmission) -> Recorded:
        return Recorded(id=insert(conn, body.hotkey, body.score), hotkey=body.hotkey, score=body.score)

    return api


def sqlalchemy_defaults() -> Any:
    """Over SQLAlchemy's async defaults (one engine, its default pool, plain sessions), as generated services do.

    The writer pragmas of ``BENCH_PRAGMAS`` are set on each connection, and
    nothing else: no single writer, no ``BEGIN IMMEDIATE``.
    """
    from example_challenge.models import Submission
    from example_challenge.routes import NewSubmission, Recorded
    from fastapi import Depends
    from sqlalchemy import event
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

    engine = create_async_engine(f"sqlite+aiosqlite:///{os.environ['BENCH_DATABASE']}")

    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in filter(None, os.environ.get("BENCH_PRAGMAS", "").split(";")):
            cursor.execute(pragma)
        cursor.close()

    sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def session() -> Any:
        async with sessions() as opened:
            yield opened

    api = _api()

    @api.post("/submissions", status_code=201)
    async def record_submission(body: NewSubmission, db: Annotated[AsyncSession, Depends(session)]) -> Recorded:
        submission = Submission(hotkey=body.hotkey, score=body.score)
        db.add(submission)
        await db.commit()
        return Recorded(id=submission.id, hotkey=submission.hotkey, score=submission.score)

    return api
