"""A challenge for the power-cut tests: each entry is an uploaded file and a row, and the weights count them.

``POST /entries/{hotkey}/{number}`` (multipart ``artifact``) stores the file
under ``uploads/<hotkey>/<number>.bin``, then commits the row holding its
size and SHA-256, then answers 201: an acknowledged entry is both. The
weights change with every entry, so a pusher has a new revision to push.
"""

import asyncio
import hashlib
from typing import Annotated

from fastapi import APIRouter, Depends, File, UploadFile
from sqlalchemy import Integer, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from base_runner import Base, database, hookimpl, storage

router = APIRouter()
Session = Annotated[AsyncSession, Depends(database.session_dependency)]


class Entry(Base):
    __tablename__ = "powercut_entries"
    hotkey: Mapped[str] = mapped_column(String(64), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))


@router.post("/entries/{hotkey}/{number}", status_code=201)
async def add_entry(hotkey: str, number: int, artifact: Annotated[UploadFile, File()], session: Session) -> dict:
    data = await artifact.read()
    # storage's writes block on fsync: off the event loop.
    await asyncio.to_thread(storage.write_bytes, storage.path("uploads", hotkey, f"{number}.bin"), data)
    digest = hashlib.sha256(data).hexdigest()
    session.add(Entry(hotkey=hotkey, number=number, size=len(data), sha256=digest))
    await session.commit()
    return {"hotkey": hotkey, "number": number, "sha256": digest}


@router.get("/entries")
async def entries() -> dict:
    async with database.session(readonly=True) as session:
        rows = await session.execute(select(Entry.hotkey, Entry.number, Entry.sha256))
        return {"entries": [[hotkey, number, digest] for hotkey, number, digest in rows]}


@hookimpl
def register_routers() -> APIRouter:
    return router


@hookimpl
async def get_weights() -> dict[str, float]:
    async with database.read_engine.connect() as conn:
        rows = await conn.execute(select(Entry.hotkey, func.count()).group_by(Entry.hotkey))
        return {hotkey: float(count) for hotkey, count in rows}
