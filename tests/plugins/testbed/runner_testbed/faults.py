"""A challenge for fault tests: numbered rows written by requests or a worker, and a get_weights that is slow on demand.

Settings, read at import from the environment:

- ``CHALLENGE_FAULTS_WORKER=1``: a background worker inserts rows as fast as it can.
- ``CHALLENGE_FAULTS_WEIGHTS``: ``sleep:<s>`` awaits, ``block:<s>`` blocks the event loop,
  ``fail:<s>`` waits then raises; empty returns at once.
- ``CHALLENGE_FAULTS_PLAIN=1``: ``get_weights`` is a plain ``def`` (``sleep`` then blocks its thread).
"""

import asyncio
import os
import threading
import time
from typing import Annotated

from fastapi import APIRouter, Depends
from sqlalchemy import Integer, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from base_runner import Base, database, hookimpl, run_worker

router = APIRouter()
Session = Annotated[AsyncSession, Depends(database.session_dependency)]
WEIGHTS = os.environ.get("CHALLENGE_FAULTS_WEIGHTS", "")
_calls = {"started": 0, "running": 0, "most": 0}
_calls_lock = threading.Lock()


class Row(Base):
    __tablename__ = "fault_rows"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    payload: Mapped[str] = mapped_column(String)


@router.post("/rows/{number}", status_code=201)
async def add_row(number: int, session: Session, size: int = 16) -> dict[str, int]:
    session.add(Row(id=number, payload="x" * size))
    await session.commit()
    return {"id": number}


@router.get("/rows")
async def count_rows() -> dict[str, int]:
    async with database.session(readonly=True) as session:
        return {"rows": (await session.execute(select(func.count(Row.id)))).scalar_one()}


@router.get("/weights-calls")
def weights_calls() -> dict[str, int]:
    return dict(_calls)


async def _write_forever() -> None:
    while True:
        async with database.session() as session:
            session.add(Row(payload="worker"))
            await session.commit()


@hookimpl
def register_routers():
    return router


@hookimpl
def lifespan(app):
    if os.environ.get("CHALLENGE_FAULTS_WORKER") == "1":
        return run_worker(app, _write_forever, name="writer")
    return None


def _enter() -> tuple[str, float]:
    with _calls_lock:
        _calls["started"] += 1
        _calls["running"] += 1
        _calls["most"] = max(_calls["most"], _calls["running"])
    mode, _, seconds = WEIGHTS.partition(":")
    return mode, float(seconds or 0)


def _leave() -> None:
    with _calls_lock:
        _calls["running"] -= 1


if os.environ.get("CHALLENGE_FAULTS_PLAIN") == "1":

    @hookimpl
    def get_weights():
        mode, seconds = _enter()
        try:
            time.sleep(seconds)
            if mode == "fail":
                raise RuntimeError("the scoring backend is down")
            return {"5Faults": 1.0}
        finally:
            _leave()

else:

    @hookimpl
    async def get_weights():
        mode, seconds = _enter()
        try:
            if mode == "block":
                time.sleep(seconds)
            else:
                await asyncio.sleep(seconds)
            if mode == "fail":
                raise RuntimeError("the scoring backend is down")
            return {"5Faults": 1.0}
        finally:
            _leave()
