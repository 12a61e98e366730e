"""A lifespan written as ``async def``: it returns a coroutine, not an async context manager."""

from base_runner import hookimpl


@hookimpl
def get_weights():
    return {}


@hookimpl
async def lifespan(app):
    yield
