"""A challenge for the power-cut tests: each entry is an uploaded file, a row and a job, and the weights count them.

``POST /entries/{hotkey}/{number}`` (multipart ``artifact``) stores the file
under ``uploads/<hotkey>/<number>.bin``, then commits the row holding its
size and SHA-256 with a ``grade`` job (key ``entry:<hotkey>:<number>``),
then answers 201: an acknowledged entry is all three. The job writes
``results/<hotkey>/<number>.json`` and marks the row graded. The weights
change with every entry, so a pusher has a new revision to push.
"""

import hashlib
import json
from typing import Annotated

from fastapi import APIRouter, Depends, File, UploadFile
from sqlalchemy import Boolean, Integer, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from base_runner import Base, database, hookimpl, jobs, storage

router = APIRouter()
Session = Annotated[AsyncSession, Depends(database.session_dependency)]


class Entry(Base):
    __tablename__ = "powercut_entries"
    hotkey: Mapped[str] = mapped_column(String(64), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    graded: Mapped[bool] = mapped_column(Boolean, default=False)


@jobs.task(max_attempts=5, timeout=30, backoff=0.2)
async def grade(job: jobs.Job, hotkey: str, number: int) -> None:
    result = json.dumps({"hotkey": hotkey, "number": number, "job": job.id}).encode()
    await storage.write_bytes_async(storage.path("results", hotkey, f"{number}.json"), result)
    async with job.session() as session:
        entry = await session.get(Entry, (hotkey, number))
        entry.graded = True
        await session.commit()


@router.post("/entries/{hotkey}/{number}", status_code=201)
async def add_entry(hotkey: str, number: int, artifact: Annotated[UploadFile, File()], session: Session) -> dict:
    data = await artifact.read()
    await storage.write_bytes_async(storage.path("uploads", hotkey, f"{number}.bin"), data)
    digest = hashlib.sha256(data).hexdigest()
    session.add(Entry(hotkey=hotkey, number=number, size=len(data), sha256=digest))
    await jobs.enqueue(session, grade, hotkey=hotkey, number=number, key=f"entry:{hotkey}:{number}")
    await session.commit()
    return {"hotkey": hotkey, "number": number, "sha256": digest}


@router.get("/entries")
async def entries() -> dict:
    async with database.session(readonly=True) as session:
        rows = await session.execute(select(Entry.hotkey, Entry.number, Entry.sha256, Entry.graded))
        return {"entries": [list(row) for row in rows]}


@hookimpl
def register_routers() -> APIRouter:
    return router


@hookimpl
def register_tasks() -> list:
    return [grade]


@hookimpl
async def get_weights() -> dict[str, float]:
    async with database.read_engine.connect() as conn:
        rows = await conn.execute(select(Entry.hotkey, func.count()).group_by(Entry.hotkey))
        return {hotkey: float(count) for hotkey, count in rows}
