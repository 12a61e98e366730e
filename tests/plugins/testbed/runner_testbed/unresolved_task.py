"""A challenge whose task names, in its annotations, a model its module never imports."""

from __future__ import annotations

from base_runner import hookimpl, jobs


@jobs.task
async def evaluate(job: jobs.Job, submission: Submission) -> None:  # noqa: F821 - the fault under test
    pass


@hookimpl
def register_tasks():
    return [evaluate]


@hookimpl
def get_weights():
    return {}
