"""A challenge whose register_tasks returns a function it forgot to decorate with @jobs.task."""

from base_runner import hookimpl


async def evaluate(job, submission_id: int) -> None:
    pass


@hookimpl
def register_tasks():
    return [evaluate]


@hookimpl
def get_weights():
    return {}
