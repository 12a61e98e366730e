import contextlib

from base_runner import hookimpl


@contextlib.asynccontextmanager
async def _boom(app):
    raise RuntimeError("the model file /data/model.bin is missing")
    yield


@hookimpl
def lifespan(app):
    return _boom(app)


@hookimpl
def get_weights():
    return {}
