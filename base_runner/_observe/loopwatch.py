"""A watchdog for the event loop: a thread that notices when the loop stops turning, and says where.

An ``async def`` that blocks (``time.sleep``, CPU-bound work, a synchronous
client) stalls every request of the process, ``/health`` included, and no
``asyncio`` timeout can fire meanwhile. Only a thread outside the loop can
see it: :class:`LoopWatchdog` logs the loop thread's stack while it is
blocked, and reports it on ``/ready`` for a while after.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from collections.abc import Awaitable
from types import FrameType
from typing import TypeVar

from .._core.runtime import Runtime

log = logging.getLogger("base_runner")

T = TypeVar("T")
#: Seconds ``/ready`` keeps reporting a stall after the loop turns again.
REPORT_FOR = 60.0
_KEY = "loop:blocked"


def _where(frame: FrameType) -> str:
    """The innermost Python frame of a stack, as ``function (file:line)``."""
    summary = traceback.extract_stack(frame)[-1]
    return f"{summary.name} ({summary.filename}:{summary.lineno})"


def _task(loop: asyncio.AbstractEventLoop | None) -> str:
    """``, in <task>`` for the task running on ``loop`` when it has a name of its own (a job's), else nothing.

    Read from the watchdog's thread: the loop is blocked, so its current task cannot change meanwhile.
    """
    try:
        task = asyncio.current_task(loop) if loop is not None else None
    except RuntimeError:
        return ""
    name = task.get_name() if task is not None else ""
    return "" if not name or name.startswith("Task-") else f", in {name}"


class LoopWatchdog:
    """Beats in the loop every ``stall / 4`` seconds; a thread reports a beat that is ``stall`` seconds late."""

    def __init__(self, runtime: Runtime, stall: float) -> None:
        self._runtime = runtime
        self._stall = stall
        self._beat = time.monotonic()
        self._loop_thread = threading.get_ident()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._where: str | None = None
        self._clear_at: float | None = None

    async def run(self) -> None:
        """The heartbeat; run it as a task on the loop for as long as the app lives."""
        self._loop_thread = threading.get_ident()
        self._loop = asyncio.get_running_loop()
        watcher = threading.Thread(target=self._watch, name="base-runner-loop-watchdog", daemon=True)
        watcher.start()
        try:
            while True:
                before = time.monotonic()
                await asyncio.sleep(self._stall / 4)
                now = self._beat = time.monotonic()
                late = now - before - self._stall / 4
                if late >= self._stall:
                    where = self._where or "unknown code"
                    log.error("the event loop turned again after being blocked for %.1fs in %s", late, where)
                    self._runtime.problems[_KEY] = (
                        f"the event loop was blocked for {late:.1f}s in {where}: every request waited; "
                        "make that code await, or move it to a thread"
                    )
                    self._where, self._clear_at = None, now + REPORT_FOR
                elif self._clear_at is not None and now >= self._clear_at:
                    self._runtime.problems.pop(_KEY, None)
                    self._clear_at = None
        finally:
            self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self._stall / 4):
            late = time.monotonic() - self._beat
            if late < self._stall or self._where is not None:
                continue
            frame = sys._current_frames().get(self._loop_thread)
            if frame is None:
                continue
            self._where = _where(frame) + _task(self._loop)
            stack = "".join(traceback.format_stack(frame))
            log.error("the event loop has been blocked for %.1fs; the loop thread is at:\n%s", late, stack.rstrip())
            self._runtime.problems[_KEY] = f"the event loop is blocked in {self._where}"


async def longest_stall(awaitable: Awaitable[T], tick: float = 0.01) -> tuple[T, float]:
    """Await ``awaitable`` and measure the longest time the loop went without turning meanwhile."""
    longest = 0.0
    last = time.monotonic()

    async def beat() -> None:
        nonlocal longest, last
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            longest, last = max(longest, now - last - tick), now

    beating = asyncio.create_task(beat())
    await asyncio.sleep(0)  # let the beat start before the awaitable may block
    try:
        result = await awaitable
    finally:
        beating.cancel()
    # The beat may not have run since the last stall: count the time since its last turn too.
    return result, max(longest, time.monotonic() - last - tick)
