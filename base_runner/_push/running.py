"""The pusher at work: under ``serve`` while the app runs, from its own small configuration."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import protocol
from .attempt import Attempt
from .pusher import REQUEST_TIMEOUT, Pusher
from .store import PushStore, store_path

if TYPE_CHECKING:
    from .._core.auth import MasterAuth
    from .._core.runtime import Runtime
    from .._core.settings import RunnerSettings
    from .._weights.weights import WeightsCache

log = logging.getLogger("base_runner")


@dataclass(frozen=True)
class PushConfig:
    """What the pusher needs of the settings, and nothing more."""

    #: ``CHALLENGE_MASTER_BASE_URL``.
    master_base_url: str
    #: The master's ``epoch_interval_seconds``.
    epoch_seconds: int
    #: Seconds between looks at the weights (``CHALLENGE_PUSH_INTERVAL``).
    interval: float
    #: Seconds a snapshot is valid (``CHALLENGE_PUSH_SNAPSHOT_LIFETIME``).
    lifetime: int
    #: Where the push ledger lives.
    data_dir: Path

    @classmethod
    def of(cls, settings: RunnerSettings) -> PushConfig | None:
        """The pusher's configuration; ``None`` when no master URL is set and nothing is pushed."""
        if settings.master_base_url is None:
            return None
        return cls(
            master_base_url=settings.master_base_url,
            epoch_seconds=settings.epoch_seconds,
            interval=settings.push_interval,
            lifetime=settings.push_snapshot_lifetime,
            data_dir=settings.data_dir,
        )


@asynccontextmanager
async def pushing(
    *,
    slug: str,
    config: PushConfig,
    weights: Callable[[], Awaitable[Mapping[str, float]]],
    token: Callable[[], str],
    store: PushStore,
    report: Callable[[str, dict[str, object]], None] | None = None,
    on_step: Callable[[Attempt], None] | None = None,
) -> AsyncIterator[Pusher]:
    """Run a :class:`Pusher` in a task for the duration of the block; cancelled on exit.

    A request cut short by the cancellation stays pending in the store and is
    resent by the next process.
    """
    # Here, not at module level: a runner that does not push never loads httpx (40 ms and 3 MiB of its start).
    import httpx

    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as client:
        pusher = Pusher.of(
            slug,
            config,
            weights=weights,
            token=token,
            store=store,
            client=client,
            report=report,
            on_step=on_step,
        )
        task = asyncio.create_task(pusher.run(), name=f"base-runner pusher of {slug}")
        try:
            yield pusher
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task


@asynccontextmanager
async def start_pushing(
    config: PushConfig,
    slug: str,
    cache: WeightsCache,
    auth: MasterAuth,
    runtime: Runtime,
    on_step: Callable[[Attempt], None] | None = None,
) -> AsyncIterator[None]:
    """``serve``'s pusher: the weights the pull endpoint serves, pushed while the app runs.

    ``on_step`` is called with each step's :class:`Attempt` (the metrics count them), once the
    ``push`` part's state is the step's outcome.
    """
    problem = protocol.slug_problem(slug)
    if problem is not None:
        message = f"cannot push weights for challenge {slug!r}: {problem}"
        log.error("%s", message)
        runtime.publish("pusher", {"status": "degraded", "error": message})
        yield
        return

    async def weights() -> Mapping[str, float]:
        return json.loads(await cache.body())["weights"]

    def stepped(attempt: Attempt) -> None:
        runtime.mark("push", attempt.outcome, ok=attempt.ok)
        if on_step is not None:
            on_step(attempt)

    store = await asyncio.to_thread(PushStore, store_path(config.data_dir), slug)
    try:
        async with pushing(
            slug=slug,
            config=config,
            weights=weights,
            token=auth.expected_token,
            store=store,
            report=runtime.publish,
            on_step=stepped,
        ):
            yield
    finally:
        store.close()
