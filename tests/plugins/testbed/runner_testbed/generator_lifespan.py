"""A lifespan that returns a plain generator instead of an async context manager."""

from base_runner import hookimpl


def _steps():
    yield


@hookimpl
def get_weights():
    return {}


@hookimpl
def lifespan(app):
    return _steps()
