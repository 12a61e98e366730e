"""A challenge whose background worker dies shortly after startup."""

import asyncio
import os

from base_runner import hookimpl, run_worker


async def _work():
    await asyncio.sleep(float(os.environ.get("CHALLENGE_CRASH_AFTER", "0.5")))
    raise RuntimeError("lost the connection to the scoring backend")


@hookimpl
def lifespan(app):
    return run_worker(app, _work, name="scorer")


@hookimpl
def get_weights():
    return {"5Crash": 1.0}
