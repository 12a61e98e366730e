"""One attempt of a job: started from its claimed row, run as a task of its own, and settled in one write.

Its outcome (succeeded, retried after a backoff, dead, cancelled, put back
at shutdown, or lost to a take-over) is one log line and one event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Any

from .._core.correlation import correlation_id
from .._core.errors import describe
from .._executor.service import Attempt, attempt_scope
from .base import SchedulerBase, log
from .job import Held, Job, failure
from .table import CANCELLED, DEAD, QUEUED, SUCCEEDED
from .tasks import Permanent

#: Jitter of a retry's delay: ``backoff * 2**(n-1)`` times a factor drawn in this range, so retries
#: of many jobs that failed together spread out, and each delay still exceeds the one before.
JITTER = (0.8, 1.2)


class Attempts(SchedulerBase):
    """How the scheduler runs each attempt it claimed, and records how it ended."""

    def _start(self, row: Any) -> Held:
        task = self.tasks[row.task]
        attempt = Held(
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

    async def _supervise(self, attempt: Held) -> None:
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

    async def _settle_attempt(self, attempt: Held, inner: asyncio.Task[Any]) -> None:
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

    async def _fail(self, attempt: Held, exc: BaseException, seconds: float) -> None:
        task = attempt.task
        error, trace = failure(exc)
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

    def _outcome(self, attempt: Held, outcome: str, seconds: float, detail: str | None = None) -> None:
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
