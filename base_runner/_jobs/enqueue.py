"""Transactional enqueue: a job is a row inserted in the caller's own write session, and its commit wakes the scheduler.

Session events of every session of the process also complete a job whose
:meth:`~.job.Job.session` commits, in that same commit.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from .._core.correlation import correlation_id
from .base import BOOK
from .job import ATTEMPT, LeaseLost
from .table import LIVE, QUEUED, RUNNING, SUCCEEDED
from .table import jobs as T
from .tasks import MAX_NAME, Task, TaskError

if TYPE_CHECKING:
    from .scheduler import Scheduler

#: Where a session keeps the tasks it enqueued, until its commit wakes the scheduler.
_ENQUEUED = "base_runner_jobs_enqueued"

#: The scheduler of the running app; set by its startup.
current: Scheduler | None = None


def install(scheduler: Scheduler) -> None:
    """Take enqueues for ``scheduler`` from now on."""
    global current
    current = scheduler


def forget(scheduler: Scheduler) -> None:
    """Take no more enqueues for ``scheduler``: an enqueue now needs a runner again."""
    global current
    if current is scheduler:
        current = None


def _scheduler() -> Scheduler:
    if current is None:
        raise RuntimeError(
            "jobs.enqueue needs the runner: call it from a route, hook or task of a running challenge "
            "(in tests, through the challenge_app fixture)"
        )
    return current


async def enqueue(
    session: AsyncSession,
    task: Task | str,
    /,
    *,
    key: str | None = None,
    delay: float | None = None,
    priority: int = 0,
    **kwargs: Any,
) -> str:
    """Add a job of ``task`` with ``kwargs`` in ``session``'s transaction; see :mod:`base_runner.jobs`."""
    scheduler = _scheduler()
    registered = scheduler.task(task)
    args = registered.bind(kwargs)
    if not isinstance(session, AsyncSession) or session.bind is not scheduler.db.engine:
        raise TaskError(
            f"enqueue of {registered.name}: pass a write session (from database.session() or "
            "database.session_dependency), not a read-only one, so the job commits with its transaction"
        )
    if key is not None and (not isinstance(key, str) or not key or len(key) > MAX_NAME):
        raise TaskError(f"enqueue of {registered.name}: key must be a str of 1 to {MAX_NAME} characters")
    if delay is not None and not (isinstance(delay, int | float) and math.isfinite(delay) and delay >= 0):
        raise TaskError(f"enqueue of {registered.name}: delay must be a number of seconds >= 0, got {delay!r}")
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > 2**31:
        raise TaskError(f"enqueue of {registered.name}: priority must be an int, got {priority!r}")
    if key is not None:
        found = await session.scalar(select(T.c.id).where(T.c.key == key, T.c.state.in_(LIVE)))
        if found is not None:
            return str(found)
    now = scheduler.now()
    result = await session.execute(
        insert(T).values(
            task=registered.name,
            args=args,
            key=key,
            state=QUEUED,
            priority=priority,
            run_at=now + (delay or 0.0),
            attempts=0,
            enqueued_at=now,
            correlation_id=correlation_id.get(),
        ),
        execution_options=BOOK,
    )
    session.info.setdefault(_ENQUEUED, []).append(registered.name)
    return str(result.inserted_primary_key[0])  # type: ignore[attr-defined]  # an INSERT's CursorResult


# Session events, for every session of the process: a dict lookup each, on sessions that never enqueue.


@event.listens_for(Session, "before_commit")
def _completing(session: Session) -> None:
    held = session.info.get(ATTEMPT)
    if held is None:
        return
    scheduler, attempt = held
    if attempt.completed:
        raise RuntimeError(f"job {attempt.id} is already complete: a job's session commits once")
    result = session.execute(
        update(T)
        .where(T.c.id == attempt.id, T.c.lease_token == attempt.token, T.c.state == RUNNING)
        .values(state=SUCCEEDED, finished_at=scheduler.now(), lease_token=None, lease_expires=None),
        execution_options=BOOK,
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(
            f"job {attempt.id}: this attempt no longer holds the job (its lease was taken over or it was "
            "cancelled); nothing of its session is written"
        )


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    held = session.info.get(ATTEMPT)
    if held is not None:
        held[1].completed = True
    names = session.info.pop(_ENQUEUED, None)
    if names and current is not None:
        current.enqueued(names)


@event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(_ENQUEUED, None)
