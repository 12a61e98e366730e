"""What commits and operators tell the scheduler: jobs enqueued, and show, list, retry and cancel."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from .base import BOOK, SchedulerBase, log
from .job import JobConflict, JobInfo, JobNotFound, job_number
from .table import CANCELLED, DEAD, LIVE, QUEUED
from .table import jobs as T

#: Seconds ``cancel`` waits for a running attempt to stop before it answers.
CANCEL_WAIT = 5.0


class Operators(SchedulerBase):
    """The scheduler's answers to commits (a wake) and to operators (``base-runner jobs``, the HTTP API)."""

    def enqueued(self, names: list[str]) -> None:
        """Jobs of ``names`` were committed: count them, and wake the claim loop."""
        for name in names:
            self._emit("enqueued", name)
        self._wake.set()

    async def info(self, job_id: str) -> JobInfo:
        number = job_number(job_id)
        async with self.db.read_engine.connect() as conn:
            row = (await conn.execute(select(T).where(T.c.id == number))).first()
        if row is None:
            raise JobNotFound(f"no job {job_id}: never enqueued, or pruned after its retention")
        return JobInfo.of(row)

    async def listing(self, states: Iterable[str] = (), task: str | None = None, limit: int = 100) -> list[JobInfo]:
        query = select(T).order_by(T.c.id.desc()).limit(limit)
        states = list(states)
        if states:
            query = query.where(T.c.state.in_(states))
        if task is not None:
            query = query.where(T.c.task == task)
        async with self.db.read_engine.connect() as conn:
            return [JobInfo.of(row) for row in await conn.execute(query)]

    async def retry(self, job_id: str) -> JobInfo:
        """Queue a dead or cancelled job again, with its attempts counted from zero."""
        number = job_number(job_id)
        try:
            async with self.db.engine.begin() as conn:
                result = await conn.execute(
                    update(T)
                    .where(T.c.id == number, T.c.state.in_((DEAD, CANCELLED)))
                    .values(state=QUEUED, attempts=0, run_at=self.now(), finished_at=None),
                    execution_options=BOOK,
                )
        except IntegrityError:
            info = await self.info(job_id)
            raise JobConflict(
                f"job {job_id} cannot run again while another job with its key {info.key!r} is queued or running"
            ) from None
        if result.rowcount != 1:
            info = await self.info(job_id)
            raise JobConflict(f"job {job_id} is {info.state}; only a dead or cancelled job can be retried")
        log.info("job %s: queued again by an operator", job_id, extra={"job_id": job_id, "outcome": "retried"})
        self._wake.set()
        return await self.info(job_id)

    async def cancel(self, job_id: str) -> JobInfo:
        """Cancel a queued job (it never runs) or a running one (its task sees ``CancelledError``)."""
        number = job_number(job_id)
        attempt = self._running.get(number)
        if attempt is not None and attempt.supervisor is not None:
            attempt.stop("cancel")
            await asyncio.wait({attempt.supervisor}, timeout=CANCEL_WAIT)
            return await self.info(job_id)
        now = self.now()
        async with self.db.engine.begin() as conn:
            # Queued, or running under a lease of a process that is gone: no attempt here holds it.
            result = await conn.execute(
                update(T)
                .where(T.c.id == number, T.c.state.in_(LIVE), T.c.id.not_in(list(self._running)))
                .values(
                    state=CANCELLED,
                    finished_at=now,
                    lease_token=None,
                    lease_expires=None,
                    error="cancelled by an operator",
                ),
                execution_options=BOOK,
            )
        info = await self.info(job_id)
        if result.rowcount != 1:
            if info.state == CANCELLED:
                return info  # cancelled already: the operator's second try changes nothing
            raise JobConflict(f"job {job_id} is {info.state}; only a queued or running job can be cancelled")
        log.info("job %s: cancelled by an operator", job_id, extra={"job_id": job_id, "outcome": "cancelled"})
        self._emit("cancelled", info.task)
        return info
