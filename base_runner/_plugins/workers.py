"""Background workers that cannot die in silence."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI

from .._core.errors import describe

log = logging.getLogger("base_runner")


@contextlib.asynccontextmanager
async def run_worker(
    app: FastAPI, work: Callable[[], Awaitable[None]], *, name: str
) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``work()`` as a background task for as long as the block (the app) lives.

    Return it from the ``lifespan`` hook, or enter it in your own lifespan.
    If ``work`` raises, the fault is logged with the challenge's name,
    ``/ready`` and ``/health`` answer 503 with the reason, and ``serve``
    stops with a non-zero exit so that Swarm restarts the process: a dead
    worker never leaves stale weights behind in silence. A ``work`` that
    returns is finished and logged as such. On shutdown the task is
    cancelled and awaited.

    :param app: the app passed to the ``lifespan`` hook.
    :param work: an async function that runs until cancelled.
    :param name: the worker's name in logs and in ``/ready``.
    """
    runtime = app.state.runtime

    part = f"worker:{name}"

    async def supervise() -> None:
        runtime.mark(part, "running", ok=True)
        try:
            await work()
        except asyncio.CancelledError:
            runtime.mark(part, "stopped", ok=True)
            raise
        except Exception as exc:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                # Stopped mid-statement at shutdown: the driver's error is the
                # cancellation's echo, not a crash.
                log.info("challenge %s: worker %s stopped (%s)", runtime.challenge, name, describe(exc))
                raise asyncio.CancelledError from exc
            log.exception("challenge %s: worker %s crashed", runtime.challenge, name)
            runtime.mark(part, "crashed", ok=False)
            runtime.fail(f"worker {name} crashed: {describe(exc)}")
        else:
            log.info("challenge %s: worker %s finished", runtime.challenge, name)
            runtime.mark(part, "finished", ok=True)

    task = asyncio.create_task(supervise(), name=f"{runtime.challenge}:{name}")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
