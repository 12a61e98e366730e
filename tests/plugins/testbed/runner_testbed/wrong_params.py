"""A lifespan whose parameter is not the one the hook passes."""

from base_runner import hookimpl


@hookimpl
def get_weights():
    return {}


@hookimpl
def lifespan(application):
    return None
