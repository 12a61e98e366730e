"""Enqueue, claim, run, retry: the scheduler of one runner process, and the job handle a task gets.

The rules it keeps (``docs/authoring.md`` says them to authors):

- **Transactional enqueue.** :func:`enqueue` inserts the job through the
  caller's own write session: the job exists if and only if that
  transaction commits. Its commit wakes the scheduler.
- **One claim, one statement.** Due jobs are claimed by one guarded
  ``UPDATE ... RETURNING`` that moves them to ``running``, counts the
  attempt and stamps each with a fresh lease token, within the global and
  each task's concurrency, by priority then by how long they have been due.
- **Leases, renewed on a timer.** A lease lasts ``CHALLENGE_JOBS_LEASE``
  seconds; a timer renews the lease of every running attempt every third of
  it, whatever the task is doing. Every write about a job is guarded by its
  token, so an attempt whose lease was taken over can never overwrite the
  newer one. Leases of other processes that expired (a runner killed with
  ``kill -9``) are taken back on start and on every tick: the attempt they
  held counts as failed, and the job runs again.
- **Shutdown costs nothing.** :meth:`Scheduler.running` stops claiming,
  lets running attempts finish within ``CHALLENGE_JOBS_GRACE`` seconds, then
  cancels the rest and puts them back without spending their attempt.

Every write here is bookkeeping (:data:`~base_runner._storage.db.BOOKKEEPING`): it
does not count as a change of the challenge's data, so it never invalidates
the weights cache. A task's own writes, through :meth:`Job.session`, do.

The parts: :mod:`.job` (the handle a task gets, a job's record),
:mod:`.enqueue` (the transactional insert), :mod:`.leases` (the claim and the
leases), :mod:`.attempts` (one attempt), :mod:`.operators` (show, list,
retry, cancel); this module is the claim loop, its start and its stop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from sqlalchemy import func, select

from .._core.errors import describe
from . import enqueue as enqueuing
from . import table
from .attempts import Attempts
from .base import log
from .enqueue import enqueue
from .job import Job, JobConflict, JobEvent, JobInfo, JobNotFound, LeaseLost
from .leases import Leases
from .operators import Operators
from .table import QUEUED
from .table import jobs as T

#: Seconds the scheduler sleeps at most with nothing due, in case a wake was missed.
MAX_IDLE = 30.0


class Scheduler(Operators, Leases, Attempts):
    """The jobs of one challenge in one process: claims, runs, renews, retries and puts back.

    Its parameters are :class:`~.base.SchedulerBase`'s.
    """

    # -- start and stop

    async def prepare(self) -> None:
        """Create or evolve the table, take back leases that expired, and take enqueues from now on.

        Before the challenge's lifespan, which may enqueue.
        """
        async with self.db.engine.begin() as conn:
            added = await conn.run_sync(table.ensure)
        if added:
            log.info("jobs table: added %s", ", ".join(added))
        await self._take_over()
        async with self.db.read_engine.connect() as conn:
            rows = await conn.execute(select(T.c.task, func.count()).where(T.c.state == QUEUED).group_by(T.c.task))
            for name, count in rows:
                if name not in self.tasks:
                    log.warning(
                        "%d queued jobs are of the task %s, which the challenge does not register: they wait "
                        "until a version that registers it runs (or cancel them: base-runner jobs cancel ID)",
                        count,
                        name,
                    )
        await self._refresh()
        enqueuing.install(self)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Claim and run jobs for as long as the block lives; at its end, stop as the module says."""
        if not self.autorun:
            try:
                yield
            finally:
                enqueuing.forget(self)
            return
        self.alive_at = time.monotonic()
        self._stopping = False
        self._event_loop = asyncio.get_running_loop()
        self._loop_task = asyncio.create_task(self._loop(), name="base-runner:jobs")
        self._tick_task = asyncio.create_task(self._ticks(), name="base-runner:jobs-leases")
        self._loop_task.add_done_callback(self._ended)
        self._tick_task.add_done_callback(self._ended)
        try:
            yield
        finally:
            self._begin_stop()
            assert self._stopper is not None
            await self._stopper
            # Only now: requests still draining after SIGTERM may enqueue (their jobs run at the next start).
            enqueuing.forget(self)

    def stop_soon(self) -> None:
        """Stop claiming and start the shutdown grace now; safe to call from a signal handler.

        ``serve`` calls it on SIGTERM, so that the grace runs while the server
        drains its requests rather than after: both fit in Swarm's 10 s.
        """
        loop = self._event_loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._begin_stop)

    def _begin_stop(self) -> None:
        if self._stopper is None and self._loop_task is not None:
            self._stopper = asyncio.create_task(self._stop(), name="base-runner:jobs-stop")

    def _ended(self, part: asyncio.Task[None]) -> None:
        """A loop of the scheduler ended: outside a stop, it died, and the process must be restarted.

        Each loop survives every ``Exception`` (a database fault waits in the
        table); what ends one outside a stop is worse (a ``BaseException``, a
        cancellation from elsewhere), and nothing restarts it in this process.
        """
        if self._stopping:
            return
        which = "claim loop" if part is self._loop_task else "lease timer"
        error = None if part.cancelled() else part.exception()
        why = "was cancelled" if part.cancelled() else f"raised {describe(error)}" if error else "returned"
        reason = f"the jobs scheduler stopped: its {which} {why}"
        log.error("jobs: %s; no job runs until the runner restarts", reason, exc_info=error)
        if self.on_death is not None:
            self.on_death(reason)

    def problem(self) -> str | None:
        """Why the scheduler is not working, for the ``jobs`` health check; ``None`` when it is."""
        for part in (self._loop_task, self._tick_task):
            if part is not None and part.done() and not self._stopping:
                return "the jobs scheduler stopped; the runner must be restarted"
        if self.alive_at is None:
            return None if self._loop_task is None else "the jobs scheduler has not started"
        quiet = time.monotonic() - self.alive_at
        if quiet > max(3 * self.lease, 10.0):
            return f"the jobs scheduler has not turned for {quiet:.0f}s"
        return None

    async def _stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            await asyncio.wait({self._loop_task})  # it ends at its next turn, a claim in flight included
        attempts = list(self._running.values())
        if attempts:
            log.info("stopping: %d running jobs get up to %gs to finish", len(attempts), self.grace)
            await asyncio.wait([a.supervisor for a in attempts if a.supervisor is not None], timeout=self.grace)
        left = list(self._running.values())
        for attempt in left:
            attempt.stop("shutdown")
        supervisors = [a.supervisor for a in left if a.supervisor is not None]
        if supervisors:
            await asyncio.wait(supervisors, timeout=1.0)
        for attempt in list(self._running.values()):
            # Its task ignores cancellation: put the job back all the same; the process ends with it.
            log.warning("job %s (%s) did not stop when cancelled; it is put back", attempt.id, attempt.task.name)
            await self._put_back(attempt)
            if attempt.supervisor is not None:
                attempt.supervisor.cancel()
        if self._tick_task is not None:
            self._tick_task.cancel()
            await asyncio.wait({self._tick_task})

    # -- the claim loop

    def _slots(self) -> dict[str, int]:
        free = self.concurrency - len(self._running)
        if free <= 0:
            return {}
        slots = {}
        for name, task in self.tasks.items():
            room = free if task.concurrency is None else min(free, task.concurrency - self._by_task.get(name, 0))
            if room > 0:
                slots[name] = room
        return slots

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            self.alive_at = time.monotonic()
            try:
                wait = await self._turn()
            except Exception as exc:
                # A database fault (busy past its timeout, a disk error): the jobs wait in the table.
                log.error("jobs: claiming failed (%s); trying again in 1s", describe(exc))
                wait = 1.0
            if wait > 0:
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)

    async def _turn(self) -> float:
        """Claim what is due into the free slots; the seconds to sleep unless woken (0: claim again)."""
        slots = self._slots()
        if not slots or self.db.refusal is not None:
            return MAX_IDLE  # an attempt's end, or an operator, wakes the loop
        claimed = await self._claim(slots)
        for row in claimed:
            self._start(row)
        if claimed:
            return 0.0 if self._slots() else MAX_IDLE  # room left, and perhaps more due: claim again at once
        due = await self._next_due(slots)
        return MAX_IDLE if due is None else min(max(0.0, due - self.now()), MAX_IDLE)

    # -- the test fixtures' way: every due job, one at a time, in the test's own task

    async def run_until_idle(self, limit: int = 10_000) -> list[str]:
        """Run queued jobs one at a time until none is left, moving the clock forward to each delayed one.

        Returns the ids of the jobs that ran, in the order they first ran.
        Raises :class:`RuntimeError` after ``limit`` attempts (a task that
        enqueues itself forever).
        """
        ran: dict[str, None] = {}
        runs = 0
        while True:
            claimed = await self._claim(dict.fromkeys(self.tasks, 1), free=1)
            if not claimed:
                due = await self._next_due(self.tasks)
                if due is None:
                    await self._refresh()  # no tick counts the queue here: /internal/status shows it as it is now
                    return list(ran)
                self.offset += max(0.0, due - self.now()) + 1e-3
                continue
            runs += 1
            if runs > limit:
                raise RuntimeError(f"jobs still queued after {limit} attempts: does a task enqueue itself forever?")
            attempt = self._start(claimed[0])
            ran[str(attempt.id)] = None
            assert attempt.supervisor is not None
            await attempt.supervisor


__all__ = ["Job", "JobConflict", "JobEvent", "JobInfo", "JobNotFound", "LeaseLost", "Scheduler", "enqueue"]
