"""No-op jobs for the bench: ``POST /enqueue`` writes them, each in a transaction of its own; ``GET /stats``.

Each job carries the loop's clock at its enqueue; the task notes how long it
waited to start, and when it ran. Both clocks are this process's.
"""

import asyncio
import time

from fastapi import APIRouter

from base_runner import database, hookimpl, jobs

router = APIRouter()
started: list[float] = []
finished: list[float] = []


@jobs.task(max_attempts=1, timeout=None)
async def noop(job: jobs.Job, enqueued: float) -> None:
    now = time.monotonic()
    started.append(now - enqueued)
    finished.append(now)


@router.post("/enqueue")
async def enqueue(count: int, gap: float = 0.0) -> dict[str, float]:
    """Enqueue ``count`` jobs one after the other, each committed alone, ``gap`` seconds apart."""
    del started[:], finished[:]
    first = time.monotonic()
    for _ in range(count):
        async with database.session() as session:
            await jobs.enqueue(session, noop, enqueued=time.monotonic())
            await session.commit()
        if gap:
            await asyncio.sleep(gap)
    return {"first": first}


@router.get("/stats")
def stats() -> dict[str, list[float]]:
    return {"latencies": list(started), "finished": list(finished)}


@hookimpl
def register_routers() -> APIRouter:
    return router


@hookimpl
def register_tasks() -> list[jobs.Task]:
    return [noop]


@hookimpl
def get_weights() -> dict[str, float]:
    return {}
