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

Every write here is bookkeeping (:data:`~base_runner.db.BOOKKEEPING`): it
does not count as a change of the challenge's data, so it never invalidates
the weights cache. A task's own writes, through :meth:`Job.session`, do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import secrets
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, delete, event, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from .._core.correlation import correlation_id
from .._core.errors import describe
from .._executor.service import Attempt, attempt_scope
from .._storage.db import BOOKKEEPING, Database
from . import table
from .table import CANCELLED, DEAD, LIVE, QUEUED, RUNNING, SUCCEEDED
from .table import jobs as T
from .tasks import MAX_NAME, Permanent, Task, TaskError

log = logging.getLogger("base_runner.jobs")

#: Execution options of every statement of the scheduler's own.
_BOOK = {BOOKKEEPING: True}
#: Where a session keeps the tasks it enqueued, until its commit wakes the scheduler.
_ENQUEUED = "base_runner_jobs_enqueued"
#: Where a job's session keeps its attempt, so that its commit also completes the job.
_ATTEMPT = "base_runner_jobs_attempt"
#: Seconds the scheduler sleeps at most with nothing due, in case a wake was missed.
MAX_IDLE = 30.0
#: Seconds between prunings of finished jobs, at most (a retention shorter than twice this prunes more often).
PRUNE_EVERY = 60.0
#: Jobs one pruning deletes at most, so that it holds the writer briefly.
PRUNE_BATCH = 500
#: Characters of a failure's traceback kept.
MAX_TRACEBACK = 16_000
#: Seconds a failed bookkeeping write is retried before the job is left to its lease.
WRITE_RETRIES = (0.2, 1.0, 3.0)
#: Jitter of a retry's delay: ``backoff * 2**(n-1)`` times a factor drawn in this range, so retries
#: of many jobs that failed together spread out, and each delay still exceeds the one before.
JITTER = (0.8, 1.2)
#: Seconds ``cancel`` waits for a running attempt to stop before it answers.
CANCEL_WAIT = 5.0


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
class _Attempt:
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

    def __init__(self, scheduler: Scheduler, attempt: _Attempt) -> None:
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
            session.info[_ATTEMPT] = (self._scheduler, self._attempt)
            try:
                yield session
            finally:
                session.info.pop(_ATTEMPT, None)


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


def _failure(exc: BaseException) -> tuple[str, str]:
    return describe(exc)[:1000], "".join(traceback.format_exception(exc))[-MAX_TRACEBACK:]


class Scheduler:
    """The jobs of one challenge in one process: claims, runs, renews, retries and puts back.

    :param tasks: the registered tasks, by name.
    :param concurrency: attempts that may run at once in this process, all tasks together.
    :param lease: seconds a lease lasts; renewed every third of it.
    :param grace: seconds running attempts get to finish at shutdown before they are put back.
    :param retention: seconds finished (``succeeded``, ``cancelled``) jobs are kept; ``dead`` ones stay.
    """

    def __init__(
        self,
        tasks: Mapping[str, Task],
        db: Database,
        *,
        concurrency: int = 4,
        lease: float = 10.0,
        grace: float = 5.0,
        retention: float = 7 * 86400.0,
    ) -> None:
        self.tasks = dict(tasks)
        self.db = db
        self.concurrency = concurrency
        self.lease = lease
        self.grace = grace
        self.retention = retention
        #: Seconds the test fixtures moved the scheduler's clock forward (for delays and backoff).
        self.offset = 0.0
        #: Whether :meth:`running` runs jobs in the background; the test fixtures run them on demand.
        self.autorun = True
        #: Told of each :class:`JobEvent`; an observer must not raise, nor hold the scheduler's state.
        self.observers: list[Callable[[JobEvent], None]] = []
        #: Jobs by ``(task, state)`` for the live and dead ones, as of the last tick.
        self.depth: dict[tuple[str, str], int] = {}
        #: Seconds the longest-waiting due job of each task has been due, as of the last tick.
        self.oldest_due: dict[str, float] = {}
        #: ``time.monotonic()`` of the scheduler's last turn; ``None`` before it started.
        self.alive_at: float | None = None
        self._running: dict[int, _Attempt] = {}
        self._by_task: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._stopper: asyncio.Task[None] | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._claims: dict[tuple[str, ...], Any] = {}
        self._last_prune = -math.inf

    # -- the clock and the observers

    def now(self) -> float:
        return time.time() + self.offset

    def _emit(self, kind: str, task: str, seconds: float | None = None, *, attempt_failed: bool = False) -> None:
        happened = JobEvent(kind, task, seconds, attempt_failed)
        for observer in self.observers:
            try:
                observer(happened)
            except Exception:  # an observer's fault must not stop a job
                log.exception("a jobs observer failed on %s", happened)

    def task(self, task: Task | str) -> Task:
        """The registered task ``task`` names; :class:`TaskError` when the challenge did not register it."""
        name = task.name if isinstance(task, Task) else task
        found = self.tasks.get(name) if isinstance(name, str) else None
        if found is None:
            shown = name if isinstance(name, str) else getattr(task, "__qualname__", type(task).__name__)
            registered = ", ".join(sorted(self.tasks)) or "none"
            raise TaskError(
                f"task {shown} is not registered: return it from the register_tasks hook (registered: {registered})"
            )
        return found

    # -- start and stop

    async def prepare(self) -> None:
        """Create or evolve the table, take back leases that expired, and take enqueues from now on.

        Before the challenge's lifespan, which may enqueue.
        """
        global current
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
        current = self

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Claim and run jobs for as long as the block lives; at its end, stop as the module says."""
        if not self.autorun:
            try:
                yield
            finally:
                _forget(self)
            return
        self.alive_at = time.monotonic()
        self._stopping = False
        self._event_loop = asyncio.get_running_loop()
        self._loop_task = asyncio.create_task(self._loop(), name="base-runner:jobs")
        self._tick_task = asyncio.create_task(self._ticks(), name="base-runner:jobs-leases")
        try:
            yield
        finally:
            self._begin_stop()
            assert self._stopper is not None
            await self._stopper
            # Only now: requests still draining after SIGTERM may enqueue (their jobs run at the next start).
            _forget(self)

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

    def _claim_statement(self, names: tuple[str, ...]) -> Any:
        statement = self._claims.get(names)
        if statement is None:
            picks = " UNION ALL ".join(
                f"SELECT * FROM (SELECT id, priority, run_at FROM {T.name} WHERE state = '{QUEUED}' "
                f"AND task = :t{i} AND run_at <= :now ORDER BY priority DESC, run_at, id LIMIT :n{i})"
                for i in range(len(names))
            )
            statement = text(
                f"UPDATE {T.name} SET state = '{RUNNING}', attempts = attempts + 1, "
                "lease_token = :batch || '.' || id, lease_expires = :expires, started_at = :now, "
                "progress = NULL, message = NULL "
                f"WHERE id IN (SELECT id FROM ({picks}) ORDER BY priority DESC, run_at, id LIMIT :free) "
                "RETURNING id, task, args, attempts, key, lease_token, correlation_id"
            )
            self._claims[names] = statement
        return statement

    async def _claim(self, slots: Mapping[str, int], free: int | None = None) -> list[Any]:
        names = tuple(sorted(slots))
        now = self.now()
        params: dict[str, Any] = {
            "now": now,
            "expires": now + self.lease,
            "batch": secrets.token_hex(8),
            "free": free if free is not None else self.concurrency - len(self._running),
        }
        for i, name in enumerate(names):
            params[f"t{i}"], params[f"n{i}"] = name, slots[name]
        async with self.db.begin() as conn:
            result = await conn.execute(self._claim_statement(names), params, execution_options=_BOOK)
            return list(result)

    async def _next_due(self, slots: Iterable[str]) -> float | None:
        """The earliest ``run_at`` of a queued job of a task in ``slots``."""
        async with self.db.read_engine.connect() as conn:
            due = await conn.scalar(select(func.min(T.c.run_at)).where(T.c.state == QUEUED, T.c.task.in_(list(slots))))
        return None if due is None else float(due)

    def _start(self, row: Any) -> _Attempt:
        task = self.tasks[row.task]
        attempt = _Attempt(
            id=row.id,
            task=task,
            number=row.attempts,
            key=row.key,
            args=json.loads(row.args),
            token=row.lease_token,
            correlation=row.correlation_id,
        )
        self._running[attempt.id] = attempt
        self._by_task[task.name] = self._by_task.get(task.name, 0) + 1
        attempt.supervisor = asyncio.create_task(self._supervise(attempt), name=f"base-runner:job {attempt.id}")
        self._emit("started", task.name)
        return attempt

    # -- one attempt

    async def _supervise(self, attempt: _Attempt) -> None:
        task = attempt.task
        correlation_id.set(attempt.correlation)  # this task's own context: the attempt's lines name the request
        job = Job(self, attempt)
        # A task of its own, named for the job, so the loop watchdog can name the job that blocked the loop;
        # created in the attempt's scope, so the containers it runs are labelled with the job and attempt.
        with attempt_scope(Attempt(job.id, attempt.number, task.name)):
            inner = asyncio.create_task(task.function(job, **attempt.args), name=f"job {attempt.id} ({task.name})")
        attempt.inner = inner
        try:
            await self._settle_attempt(attempt, inner)
        except Exception:
            # The job's own record could not be written: its lease, no longer renewed, expires and the
            # job is taken back as a failed attempt.
            log.exception("job %s (%s): recording the attempt's outcome failed", attempt.id, task.name)
        finally:
            self._running.pop(attempt.id, None)
            self._by_task[task.name] -= 1
            self._wake.set()

    async def _settle_attempt(self, attempt: _Attempt, inner: asyncio.Task[Any]) -> None:
        task = attempt.task
        done, _ = await asyncio.wait({inner}, timeout=task.timeout)
        timed_out = not done
        if timed_out:
            attempt.stop("timeout")
        if not inner.done():
            # Cancelled: wait for it to unwind, or it would run beside the next attempt.
            await asyncio.wait({inner})
        seconds = time.perf_counter() - attempt.started
        exc: BaseException | None
        exc = asyncio.CancelledError() if inner.cancelled() else inner.exception()
        if attempt.completed:
            if exc is not None and not isinstance(exc, asyncio.CancelledError):
                log.warning(
                    "job %s (%s): raised %s after its session committed; the job stays succeeded",
                    attempt.id,
                    task.name,
                    describe(exc),
                )
            self._outcome(attempt, "succeeded", seconds)
            return
        reason = attempt.stop_reason
        if isinstance(exc, asyncio.CancelledError) and reason in ("shutdown", "cancel", "lease"):
            if reason == "shutdown":
                await self._put_back(attempt)
                self._outcome(attempt, "requeued", seconds, "put back at shutdown, its attempt not spent")
            elif reason == "cancel":
                ok = await self._write(
                    attempt, {"state": CANCELLED, "finished_at": self.now(), "error": "cancelled by an operator"}
                )
                self._outcome(attempt, "cancelled" if ok else "lost", seconds)
            else:
                self._outcome(attempt, "lost", seconds, "its lease was taken over")
            return
        if timed_out:
            exc = TimeoutError(f"the attempt ran past the task's timeout of {task.timeout:g}s and was cancelled")
        if exc is None:
            ok = await self._write(attempt, {"state": SUCCEEDED, "finished_at": self.now()})
            self._outcome(attempt, "succeeded" if ok else "lost", seconds)
            return
        await self._fail(attempt, exc, seconds)

    async def _fail(self, attempt: _Attempt, exc: BaseException, seconds: float) -> None:
        task = attempt.task
        error, trace = _failure(exc)
        if isinstance(exc, Permanent) or attempt.number >= task.max_attempts:
            ok = await self._write(
                attempt, {"state": DEAD, "finished_at": self.now(), "error": error, "traceback": trace}
            )
            why = (
                "permanent failure"
                if isinstance(exc, Permanent)
                else f"attempt {attempt.number} of {task.max_attempts}"
            )
            self._outcome(attempt, "dead" if ok else "lost", seconds, f"{error} ({why})")
            return
        delay = task.backoff * 2 ** (attempt.number - 1) * random.uniform(*JITTER)
        ok = await self._write(
            attempt, {"state": QUEUED, "run_at": self.now() + delay, "error": error, "traceback": trace}
        )
        self._outcome(attempt, "retried" if ok else "lost", seconds, f"{error}; runs again in {delay:.1f}s")

    def _outcome(self, attempt: _Attempt, outcome: str, seconds: float, detail: str | None = None) -> None:
        """The one log line of an attempt's end, and its event."""
        task = attempt.task
        level = {"retried": logging.WARNING, "lost": logging.WARNING, "dead": logging.ERROR}.get(outcome, logging.INFO)
        if outcome == "lost":
            detail = "its lease was taken over, so it wrote no outcome" if detail is None else detail
        log.log(
            level,
            "job %s %s attempt %d/%d %s in %.3fs%s",
            attempt.id,
            task.name,
            attempt.number,
            task.max_attempts,
            outcome,
            seconds,
            f": {detail}" if detail else "",
            extra={
                "job_id": str(attempt.id),
                "task": task.name,
                "attempt": attempt.number,
                "outcome": outcome,
                "seconds": round(seconds, 6),
                "correlation_id": attempt.correlation,
            },
        )
        if outcome != "lost":
            self._emit(outcome, task.name, seconds, attempt_failed=outcome in ("retried", "dead"))

    async def _write(self, attempt: _Attempt, values: Mapping[str, Any], *, ends: bool = True) -> bool:
        """Set ``values`` on the attempt's job if the attempt still holds it (its token guards the write).

        ``False`` when another attempt or an operator has the job now. A write that ``ends`` the
        attempt also releases the lease. Retried a few times on a database fault, then raised.
        """
        guarded = (
            update(T)
            .where(T.c.id == attempt.id, T.c.lease_token == attempt.token, T.c.state == RUNNING)
            .values(**values, **({"lease_token": None, "lease_expires": None} if ends else {}))
        )
        for pause in (*WRITE_RETRIES, None):
            try:
                async with self.db.begin() as conn:
                    result = await conn.execute(guarded, execution_options=_BOOK)
                    return result.rowcount == 1
            except Exception as exc:
                if pause is None:
                    raise
                log.warning("job %s: writing its state failed (%s); again in %gs", attempt.id, describe(exc), pause)
                await asyncio.sleep(pause)
        return False  # unreachable: the last pause raises

    async def _put_back(self, attempt: _Attempt) -> None:
        await self._write(attempt, {"state": QUEUED, "attempts": T.c.attempts - 1})

    # -- leases, take-overs, pruning, counts: every third of a lease

    async def _ticks(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            self.alive_at = time.monotonic()
            try:
                await self._renew()
                await self._take_over()
                if time.monotonic() - self._last_prune >= min(PRUNE_EVERY, self.retention / 2):
                    await self._prune()
                await self._refresh()
            except Exception as exc:
                log.error("jobs: a lease renewal or take-over failed (%s); trying again next tick", describe(exc))

    async def _renew(self) -> None:
        held = {a.token: a for a in self._running.values() if a.stop_reason is None}
        if not held:
            return
        async with self.db.engine.begin() as conn:
            result = await conn.execute(
                update(T)
                .where(T.c.state == RUNNING, T.c.lease_token.in_(list(held)))
                .values(lease_expires=self.now() + self.lease)
                .returning(T.c.lease_token),
                execution_options=_BOOK,
            )
            renewed = {row[0] for row in result}
        for token, attempt in held.items():
            if token not in renewed and attempt.id in self._running:
                log.warning(
                    "job %s (%s): its lease was taken over; the attempt is cancelled", attempt.id, attempt.task.name
                )
                attempt.stop("lease")

    async def _take_over(self) -> None:
        """Take back the expired leases no attempt of this process holds: each counts as a failed attempt."""
        now = self.now()
        mine = [a.token for a in self._running.values()]
        async with self.db.read_engine.connect() as conn:
            expired = list(
                await conn.execute(
                    select(T.c.id, T.c.task, T.c.attempts, T.c.lease_token).where(
                        T.c.state == RUNNING, T.c.lease_expires < now, T.c.lease_token.not_in(mine)
                    )
                )
            )
        if not expired:
            return
        buried: set[int] = set()
        params = []
        for row in expired:
            task = self.tasks.get(row.task)
            dead = task is not None and row.attempts >= task.max_attempts
            if dead:
                buried.add(row.id)
            error = (
                f"attempt {row.attempts} lost its lease: the runner running it was killed or stalled "
                f"(leases last {self.lease:g}s)"
            )
            params.append(
                {
                    "job": row.id,
                    "token": row.lease_token,
                    "error": error,
                    "state": DEAD if dead else QUEUED,
                    "finished": now if dead else None,
                    "now": now,
                }
            )
        async with self.db.engine.begin() as conn:
            await conn.execute(
                update(T)
                .where(T.c.id == bindparam("job"), T.c.lease_token == bindparam("token"), T.c.state == RUNNING)
                .values(
                    state=bindparam("state"),
                    run_at=bindparam("now"),
                    finished_at=bindparam("finished"),
                    lease_token=None,
                    lease_expires=None,
                    error=bindparam("error"),
                ),
                params,
                execution_options=_BOOK,
            )
        for row in expired:
            log.warning(
                "job %s %s: attempt %d lost its lease (its runner was killed or stalled); %s",
                row.id,
                row.task,
                row.attempts,
                "it is dead, its last attempt spent" if row.id in buried else "it runs again",
                extra={"job_id": str(row.id), "task": row.task, "outcome": "takeover"},
            )
            self._emit("takeover", row.task, attempt_failed=True)
            if row.id in buried:
                self._emit("dead", row.task)
        self._wake.set()

    async def _prune(self) -> None:
        self._last_prune = time.monotonic()
        cutoff = self.now() - self.retention
        old = (
            select(T.c.id)
            .where(T.c.state.in_((SUCCEEDED, CANCELLED)), T.c.finished_at < cutoff)
            .limit(PRUNE_BATCH)
            .scalar_subquery()
        )
        async with self.db.engine.begin() as conn:
            result = await conn.execute(delete(T).where(T.c.id.in_(old)), execution_options=_BOOK)
        if result.rowcount:
            log.info("jobs: pruned %d finished jobs older than %gs", result.rowcount, self.retention)

    async def _refresh(self) -> None:
        """Count the live and dead jobs by task and state, and how long the oldest due job has waited."""
        now = self.now()
        async with self.db.read_engine.connect() as conn:
            rows = await conn.execute(
                select(
                    T.c.task,
                    T.c.state,
                    func.count(),
                    func.min(T.c.run_at).filter(T.c.run_at <= now),
                )
                .where(T.c.state.in_((*LIVE, DEAD)))
                .group_by(T.c.task, T.c.state)
            )
            depth, oldest = {}, {}
            for name, state, count, due in rows:
                depth[(name, state)] = count
                if state == QUEUED and due is not None:
                    oldest[name] = max(0.0, now - due)
        self.depth, self.oldest_due = depth, oldest

    # -- what commits and operators tell it

    def enqueued(self, names: list[str]) -> None:
        """Jobs of ``names`` were committed: count them, and wake the claim loop."""
        for name in names:
            self._emit("enqueued", name)
        self._wake.set()

    async def info(self, job_id: str) -> JobInfo:
        number = _job_number(job_id)
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
        number = _job_number(job_id)
        try:
            async with self.db.engine.begin() as conn:
                result = await conn.execute(
                    update(T)
                    .where(T.c.id == number, T.c.state.in_((DEAD, CANCELLED)))
                    .values(state=QUEUED, attempts=0, run_at=self.now(), finished_at=None),
                    execution_options=_BOOK,
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
        number = _job_number(job_id)
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
                execution_options=_BOOK,
            )
        info = await self.info(job_id)
        if result.rowcount != 1:
            if info.state == CANCELLED:
                return info  # cancelled already: the operator's second try changes nothing
            raise JobConflict(f"job {job_id} is {info.state}; only a queued or running job can be cancelled")
        log.info("job %s: cancelled by an operator", job_id, extra={"job_id": job_id, "outcome": "cancelled"})
        self._emit("cancelled", info.task)
        return info

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


def _job_number(job_id: str) -> int:
    try:
        number = int(str(job_id).strip())
    except ValueError:
        raise JobNotFound(f"no job {str(job_id)[:40]!r}: job ids are numbers, as enqueue returns them") from None
    return number


# -- the process's scheduler, for enqueue

#: The scheduler of the running app; set by its startup.
current: Scheduler | None = None


def _forget(scheduler: Scheduler) -> None:
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
        execution_options=_BOOK,
    )
    session.info.setdefault(_ENQUEUED, []).append(registered.name)
    return str(result.inserted_primary_key[0])  # type: ignore[attr-defined]  # an INSERT's CursorResult


# Session events, for every session of the process: a dict lookup each, on sessions that never enqueue.


@event.listens_for(Session, "before_commit")
def _completing(session: Session) -> None:
    held = session.info.get(_ATTEMPT)
    if held is None:
        return
    scheduler, attempt = held
    if attempt.completed:
        raise RuntimeError(f"job {attempt.id} is already complete: a job's session commits once")
    result = session.execute(
        update(T)
        .where(T.c.id == attempt.id, T.c.lease_token == attempt.token, T.c.state == RUNNING)
        .values(state=SUCCEEDED, finished_at=scheduler.now(), lease_token=None, lease_expires=None),
        execution_options=_BOOK,
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(
            f"job {attempt.id}: this attempt no longer holds the job (its lease was taken over or it was "
            "cancelled); nothing of its session is written"
        )


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    held = session.info.get(_ATTEMPT)
    if held is not None:
        held[1].completed = True
    names = session.info.pop(_ENQUEUED, None)
    if names and current is not None:
        current.enqueued(names)


@event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(_ENQUEUED, None)


__all__ = ["Job", "JobInfo", "LeaseLost", "Scheduler", "enqueue"]
