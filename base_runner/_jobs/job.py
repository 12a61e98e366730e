"""What a running job is: the handle a task gets, the attempt the scheduler holds, and a job's record.

Also the errors the scheduler's operations raise and the events it tells its observers.
"""

from __future__ import annotations

import asyncio
import json
import time
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from .._core.errors import describe
from .tasks import Task

if TYPE_CHECKING:
    from .base import SchedulerBase

#: Where a job's session keeps its attempt, so that its commit also completes the job.
ATTEMPT = "base_runner_jobs_attempt"
#: Characters of a failure's traceback kept.
MAX_TRACEBACK = 16_000


class LeaseLost(RuntimeError):  # noqa: N818 - what happened, as the operator reads it
    """The attempt no longer holds its job: its lease was taken over or the job was cancelled."""


class JobNotFound(LookupError):
    """No job has this id (never enqueued, or pruned after its retention)."""


class JobConflict(RuntimeError):
    """The operation does not apply to the job in its state; ``str()`` says why."""


@dataclass(frozen=True)
class JobEvent:
    """What the scheduler tells its observers (metrics): one thing that happened to jobs of ``task``.

    ``kind`` is ``enqueued``, ``started``, ``succeeded``, ``retried`` (an
    attempt failed, and the job will run again), ``dead``, ``cancelled``,
    ``requeued`` (put back at shutdown) or ``takeover`` (a lease of another
    process taken back: a failed attempt too).
    """

    kind: str
    task: str
    #: Seconds the attempt ran, for the kinds that end one.
    seconds: float | None = None
    #: Whether this is the end of a failed attempt (a retry, a death, or a lease taken back).
    attempt_failed: bool = False


@dataclass
class Held:
    """One running attempt of a job, held by this process."""

    id: int
    task: Task
    number: int
    key: str | None
    args: dict[str, Any]
    token: str
    correlation: str | None
    supervisor: asyncio.Task[None] | None = None
    inner: asyncio.Task[Any] | None = None
    #: Why the scheduler cancelled it: ``shutdown``, ``cancel`` (an operator) or ``lease`` (lost).
    stop_reason: str | None = None
    #: Set once its job session committed: the job is succeeded and nothing more is written.
    completed: bool = False
    started: float = field(default_factory=time.perf_counter)

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.inner is not None:
            self.inner.cancel()


class Job:
    """What a task gets as its first argument: the job it runs, its progress, and its write session."""

    def __init__(self, scheduler: SchedulerBase, attempt: Held) -> None:
        self._scheduler = scheduler
        self._attempt = attempt

    @property
    def id(self) -> str:
        """The job's id, as :func:`enqueue` returned it."""
        return str(self._attempt.id)

    @property
    def attempt(self) -> int:
        """This attempt's number: 1 for the first run, 2 for the first retry, ..."""
        return self._attempt.number

    @property
    def key(self) -> str | None:
        """The key it was enqueued with, if any."""
        return self._attempt.key

    @property
    def task(self) -> str:
        """The task's name."""
        return self._attempt.task.name

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.task} attempt {self.attempt}>"

    async def progress(self, fraction: float, message: str | None = None) -> None:
        """Record how far the attempt is (``0.0`` to ``1.0``), with an optional line for operators.

        One small write each call: call it at milestones, not per item.
        Raises :class:`LeaseLost` when the attempt no longer holds the job.
        """
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress must be a number from 0.0 to 1.0, got {fraction!r}")
        if message is not None and not isinstance(message, str):
            raise TypeError(f"the progress message must be a str, got {type(message).__name__}")
        shown = None if message is None else message[:1000]
        ok = await self._scheduler._write(self._attempt, {"progress": float(fraction), "message": shown}, ends=False)
        if not ok:
            raise LeaseLost(f"job {self.id}: this attempt no longer holds the job (its lease was taken over)")

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A write session whose commit also marks the job succeeded: the result and the completion together.

        Write the task's result through it and commit once; if the commit
        fails, neither is written, and the attempt fails. A commit after
        the attempt lost its lease raises :class:`LeaseLost` and writes
        nothing. The task may still return normally afterwards.
        """
        if self._attempt.completed:
            raise RuntimeError(f"job {self.id} is already complete: its session committed once")
        async with self._scheduler.db.session() as session:
            session.info[ATTEMPT] = (self._scheduler, self._attempt)
            try:
                yield session
            finally:
                session.info.pop(ATTEMPT, None)


@dataclass(frozen=True)
class JobInfo:
    """A job as the database holds it (what ``jobs show`` prints and the ``job_state`` fixture returns)."""

    id: str
    task: str
    state: str
    args: dict[str, Any]
    key: str | None
    priority: int
    attempts: int
    run_at: float
    enqueued_at: float
    started_at: float | None
    finished_at: float | None
    progress: float | None
    message: str | None
    error: str | None
    traceback: str | None
    correlation_id: str | None

    @classmethod
    def of(cls, row: Any) -> JobInfo:
        values = dict(row._mapping)
        values["id"] = str(values["id"])
        values["args"] = json.loads(values["args"])
        values.pop("lease_token", None)
        values.pop("lease_expires", None)
        return cls(**values)

    def as_json(self) -> dict[str, Any]:
        return dict(vars(self))


def failure(exc: BaseException) -> tuple[str, str]:
    """The one-line error and the traceback (its end) a failed attempt leaves on its job."""
    return describe(exc)[:1000], "".join(traceback.format_exception(exc))[-MAX_TRACEBACK:]


def job_number(job_id: str) -> int:
    try:
        number = int(str(job_id).strip())
    except ValueError:
        raise JobNotFound(f"no job {str(job_id)[:40]!r}: job ids are numbers, as enqueue returns them") from None
    return number
