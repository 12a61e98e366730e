"""The operators' jobs API: ``/internal/v1/jobs``, behind the master's token, as ``base-runner jobs`` calls it.

Operators act through the running server rather than on the file: the
server's one writer connection stays the only one (a second process
writing beside it would break the single-writer rule the database is built
on, see :mod:`base_runner.db`), and only the process running a job can
cancel its attempt at once. Paths under ``/internal/v1/`` need the master's
token and slug (:mod:`base_runner.limits`); the master's public proxy never
forwards them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Query

from .._core.wire import error_response
from .scheduler import JobConflict, JobInfo, JobNotFound, Scheduler
from .table import STATES

PREFIX = "/internal/v1/jobs"


def operator_router(scheduler: Scheduler) -> APIRouter:
    """The routes of the jobs API on ``scheduler``."""
    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    async def answer(action: Callable[[str], Awaitable[JobInfo]], job_id: str) -> Any:
        try:
            return (await action(job_id)).as_json()
        except JobNotFound as exc:
            return error_response(404, "job_not_found", str(exc))
        except JobConflict as exc:
            return error_response(409, "job_conflict", str(exc))

    @router.get("")
    async def listing(
        state: list[str] = Query(default=[]),  # noqa: B008 - FastAPI's way
        task: str | None = None,
        limit: int = Query(default=100, ge=1, le=10_000),
    ) -> Any:
        unknown = [s for s in state if s not in STATES]
        if unknown:
            return error_response(
                422, "validation_failed", f"unknown state {unknown[0][:40]!r}; states: {', '.join(STATES)}"
            )
        found = await scheduler.listing(state, task, limit)
        return {"jobs": [{k: v for k, v in job.as_json().items() if k != "traceback"} for job in found]}

    @router.get("/{job_id}")
    async def show(job_id: str) -> Any:
        return await answer(scheduler.info, job_id)

    @router.post("/{job_id}/retry")
    async def retry(job_id: str) -> Any:
        return await answer(scheduler.retry, job_id)

    @router.post("/{job_id}/cancel")
    async def cancel(job_id: str) -> Any:
        return await answer(scheduler.cancel, job_id)

    return router
