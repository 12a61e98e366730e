"""Durable evaluation jobs: what a challenge evaluates after a miner submits, run by the runner.

::

    from base_runner import database, hookimpl, jobs

    @jobs.task(max_attempts=3, timeout=600, concurrency=2, backoff=5.0)
    async def evaluate(job: jobs.Job, submission_id: int) -> None:
        ...                                  # job.id, job.attempt, job.key; await job.progress(0.5, "half way")
        async with job.session() as session: # its commit also marks the job succeeded
            ...
            await session.commit()

    @hookimpl
    def register_tasks():
        return [evaluate]

    # in a route, in the route's own write session:
    job_id = await jobs.enqueue(session, evaluate, submission_id=row.id, key=f"submission:{row.id}")
    await session.commit()                   # the job exists if and only if this commits

The guarantees, each option and the operators' side: ``docs/authoring.md``
("Evaluate submissions") and ``docs/operating.md`` ("Jobs").

- :func:`task` makes an ``async def`` taking the job first a :class:`Task`:
  ``max_attempts`` (runs in all, default 3), ``timeout`` (seconds an attempt
  may run, default 600; ``None``: no limit), ``concurrency`` (attempts of
  the task at once; default: only the runner's ``CHALLENGE_JOBS_CONCURRENCY``),
  ``backoff`` (seconds before the first retry, doubling each time, with
  jitter; default 5), ``name`` (what jobs store; default the function's name).
- :func:`enqueue` writes a job in the caller's transaction and returns its id.
  With ``key``, while a job with that key is queued or running, it returns
  that job's id and adds nothing. ``delay`` (seconds) and ``priority``
  (higher runs first; default 0). The arguments must be JSON (ids and
  plain values): anything else is refused here, not when the job runs.
- Raise :class:`Permanent` to fail a job without retrying it. Any other
  exception, or running past ``timeout``, fails the attempt: the job is
  retried until ``max_attempts``, then ``dead`` with the last error.
- :class:`Job` is the running job: ``id``, ``attempt``, ``key``,
  ``progress()`` and ``session()``.
"""

from __future__ import annotations

from ._jobs.scheduler import Job, JobInfo, LeaseLost, enqueue
from ._jobs.tasks import Permanent, Task, TaskError, task

__all__ = ["Job", "JobInfo", "LeaseLost", "Permanent", "Task", "TaskError", "enqueue", "task"]

# Shown where authors see them (signatures, reprs, tracebacks) under the name they import.
for _public in (Job, JobInfo, LeaseLost, Permanent, Task, TaskError):
    _public.__module__ = __name__
