"""A stand-in for BASE's original bounty-challenge service, to time its start beside the bounty port's.

The original (PlatformNetwork/bounty-challenge at 257d382e, the Python
service) cannot run as stored: its ``db.py`` is missing from that commit. This
app has its start-up profile, written anew: a FastAPI app with the bounty's
tables and routes (the port's modules: the same models, schemas and routes,
of the same size), one ``create_async_engine`` with SQLAlchemy's default pool
over aiosqlite, and a lifespan that sets WAL and runs ``create_all``, served by
plain uvicorn. It has none of the runner's work: no plugin discovery, no
settings of its own, no schema check, no weights cache.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


def app() -> Any:
    """The app, for ``uvicorn --factory``, on the SQLite file ``BENCH_DATABASE``."""
    from bounty_challenge import models  # noqa: F401 - the tables, for create_all
    from bounty_challenge.routes import admin, bridge, public
    from fastapi import FastAPI
    from sqlalchemy.ext.asyncio import create_async_engine

    from base_runner import Base

    engine = create_async_engine(f"sqlite+aiosqlite:///{os.environ['BENCH_DATABASE']}")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            await conn.run_sync(Base.metadata.create_all)
        yield
        await engine.dispose()

    api = FastAPI(title="bounty", version="0.1.0", lifespan=lifespan)

    @api.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "slug": "bounty"}

    for router in (public, admin, bridge):
        api.include_router(router)
    return api
