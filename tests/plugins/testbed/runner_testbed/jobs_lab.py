"""A challenge that evaluates submissions as jobs, each doing what the test asks (its ``behaviour``).

Every attempt records itself (job, attempt, start and end) in ``jobs_lab_attempts``, in a session
of its own, so the tests read from the database what ran, when, and whether two runs overlapped.
"""

import asyncio
import sqlite3
import time

from fastapi import APIRouter, Depends
from pydantic import BaseModel
from sqlalchemy import Float, Integer, String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from base_runner import Base, database, hookimpl, jobs


class LabSubmission(Base):
    __tablename__ = "jobs_lab_submissions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hotkey: Mapped[str] = mapped_column(String(128))
    behaviour: Mapped[str] = mapped_column(String(64))
    score: Mapped[float | None] = mapped_column(Float, nullable=True)


class LabAttempt(Base):
    __tablename__ = "jobs_lab_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job: Mapped[str] = mapped_column(String(32))
    task: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer)
    started: Mapped[float] = mapped_column(Float)
    ended: Mapped[float | None] = mapped_column(Float, nullable=True)


#: What the attempts that lost their job were told.
LOST: list[str] = []
#: Attempts of each task running in this process now, and the most seen at once.
RUNNING: dict[str, int] = {}
MOST: dict[str, int] = {}


async def _begin(job: jobs.Job) -> int:
    RUNNING[job.task] = RUNNING.get(job.task, 0) + 1
    MOST[job.task] = max(MOST.get(job.task, 0), RUNNING[job.task])
    async with database.session() as session:
        row = LabAttempt(job=job.id, task=job.task, attempt=job.attempt, started=time.time())
        session.add(row)
        await session.commit()
        return row.id


async def _end(job: jobs.Job, row_id: int) -> None:
    RUNNING[job.task] -= 1
    async with database.session() as session:
        row = await session.get(LabAttempt, row_id)
        row.ended = time.time()
        await session.commit()


@jobs.task(max_attempts=3, timeout=30, backoff=0.4)
async def evaluate(job: jobs.Job, submission_id: int) -> None:
    row_id = await _begin(job)
    try:
        async with database.session(readonly=True) as session:
            behaviour = (await session.get(LabSubmission, submission_id)).behaviour
        kind, _, value = behaviour.partition(":")
        if kind == "fail":
            raise RuntimeError(f"the judge failed on submission {submission_id}")
        if kind == "permanent":
            raise jobs.Permanent(f"submission {submission_id} cannot be evaluated")
        if kind == "stolen":
            # Another runner takes the job over (as after this one stalled past its lease): from now on,
            # every write of this attempt must be refused.
            with sqlite3.connect(database.engine.url.database) as conn:
                conn.execute("UPDATE base_runner_jobs SET lease_token = 'another-runner' WHERE id = ?", (int(job.id),))
            conn.close()
            try:
                await job.progress(0.5, "after the take-over")
            except jobs.LeaseLost as exc:
                LOST.append(str(exc))
        if kind == "kill":
            # A part of the scheduler ends outside a stop, as when a non-Exception error escapes it.
            (part,) = [t for t in asyncio.all_tasks() if t.get_name() == value]
            part.cancel()
        if kind == "block":
            time.sleep(float(value))  # what a task must not do: the loop watchdog names the job
        if kind == "sleep":
            seconds = float(value)
            for step in range(10):
                await asyncio.sleep(seconds / 10)
                await job.progress((step + 1) / 10, f"step {step + 1} of 10")
        async with job.session() as session:
            submission = await session.get(LabSubmission, submission_id)
            submission.score = 1.0 + submission_id
            await session.commit()
    finally:
        await _end(job, row_id)


@jobs.task(concurrency=1, max_attempts=1)
async def serial(job: jobs.Job, number: int) -> None:
    row_id = await _begin(job)
    try:
        await asyncio.sleep(0.01 * (number % 3))
    finally:
        await _end(job, row_id)


router = APIRouter(prefix="/lab")
Session = Depends(database.session_dependency)


class NewSubmission(BaseModel):
    hotkey: str
    behaviour: str = "ok"
    key: str | None = None
    rollback: bool = False
    delay: float | None = None
    #: Seconds the request waits before it writes (a request still draining at shutdown).
    pause: float = 0.0


@router.post("/submissions")
async def submit(body: NewSubmission, session: AsyncSession = Session) -> dict:
    await asyncio.sleep(body.pause)
    row = LabSubmission(hotkey=body.hotkey, behaviour=body.behaviour)
    session.add(row)
    await session.flush()
    job_id = await jobs.enqueue(session, evaluate, submission_id=row.id, key=body.key, delay=body.delay)
    if body.rollback:
        await session.rollback()
        return {"job_id": job_id, "committed": False}
    await session.commit()
    return {"job_id": job_id, "submission_id": row.id, "committed": True}


class Serial(BaseModel):
    count: int


@router.post("/serial")
async def enqueue_serial(body: Serial, session: AsyncSession = Session) -> dict:
    ids = [await jobs.enqueue(session, serial, number=n) for n in range(body.count)]
    await session.commit()
    return {"job_ids": ids}


@router.get("/slow")
async def slow(seconds: float) -> dict:
    """A request that outlasts a shutdown, for the stop's time budget."""
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@router.get("/attempts")
async def attempts() -> dict:
    async with database.session(readonly=True) as session:
        rows = (await session.execute(select(LabAttempt).order_by(LabAttempt.id))).scalars()
        return {
            "attempts": [
                {"job": r.job, "task": r.task, "attempt": r.attempt, "started": r.started, "ended": r.ended}
                for r in rows
            ],
            "most_at_once": MOST,
        }


@hookimpl
def register_routers():
    return router


@hookimpl
def register_tasks():
    return [evaluate, serial]


@hookimpl
async def get_weights():
    async with database.session(readonly=True) as session:
        rows = await session.execute(
            select(LabSubmission.hotkey, LabSubmission.score).where(LabSubmission.score.is_not(None))
        )
        return {hotkey: score for hotkey, score in rows}
