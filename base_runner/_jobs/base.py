"""The state one process's scheduler keeps, and the writes every part of it makes: the guarded write of a job.

:class:`~.scheduler.Scheduler` is this state with its parts: the claim loop and
shutdown (:mod:`.scheduler`), each attempt (:mod:`.attempts`), leases and the
queue's bookkeeping (:mod:`.leases`) and the operators' actions (:mod:`.operators`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import update

from .._core.errors import describe
from .._storage.db import BOOKKEEPING, Database
from .job import Held, JobEvent
from .table import QUEUED, RUNNING
from .table import jobs as T
from .tasks import Task, TaskError

log = logging.getLogger("base_runner.jobs")

#: Execution options of every statement of the scheduler's own.
BOOK = {BOOKKEEPING: True}
#: Seconds a failed bookkeeping write is retried before the job is left to its lease.
WRITE_RETRIES = (0.2, 1.0, 3.0)


class SchedulerBase:
    """The jobs of one challenge in one process: claims, runs, renews, retries and puts back.

    :param tasks: the registered tasks, by name.
    :param concurrency: attempts that may run at once in this process, all tasks together.
    :param lease: seconds a lease lasts; renewed every third of it.
    :param grace: seconds running attempts get to finish at shutdown before they are put back.
    :param retention: seconds finished (``succeeded``, ``cancelled``) jobs are kept; ``dead`` ones stay.
    :param on_death: told why when the claim loop or the lease timer ends outside a stop (a non-``Exception``
        error escaped it): the runner's fatal switch, so that the process exits non-zero and is restarted, as
        after a dead worker. Without it, only :meth:`~.scheduler.Scheduler.problem` says so.
    """

    def __init__(
        self,
        tasks: Mapping[str, Task],
        db: Database,
        *,
        concurrency: int = 4,
        lease: float = 10.0,
        grace: float = 5.0,
        retention: float = 7 * 86400.0,
        on_death: Callable[[str], None] | None = None,
    ) -> None:
        self.tasks = dict(tasks)
        self.db = db
        self.concurrency = concurrency
        self.lease = lease
        self.grace = grace
        self.retention = retention
        self.on_death = on_death
        #: Seconds the test fixtures moved the scheduler's clock forward (for delays and backoff).
        self.offset = 0.0
        #: Whether :meth:`running` runs jobs in the background; the test fixtures run them on demand.
        self.autorun = True
        #: Told of each :class:`JobEvent`; an observer must not raise, nor hold the scheduler's state.
        self.observers: list[Callable[[JobEvent], None]] = []
        #: Jobs by ``(task, state)`` for the live and dead ones, as of the last tick.
        self.depth: dict[tuple[str, str], int] = {}
        #: Seconds the longest-waiting due job of each task has been due, as of the last tick.
        self.oldest_due: dict[str, float] = {}
        #: ``time.monotonic()`` of the scheduler's last turn; ``None`` before it started.
        self.alive_at: float | None = None
        self._running: dict[int, Held] = {}
        self._by_task: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._stopper: asyncio.Task[None] | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._claims: dict[tuple[str, ...], Any] = {}
        self._last_prune = -math.inf

    # -- the clock and the observers

    def now(self) -> float:
        return time.time() + self.offset

    def _emit(self, kind: str, task: str, seconds: float | None = None, *, attempt_failed: bool = False) -> None:
        happened = JobEvent(kind, task, seconds, attempt_failed)
        for observer in self.observers:
            try:
                observer(happened)
            except Exception:  # an observer's fault must not stop a job
                log.exception("a jobs observer failed on %s", happened)

    def task(self, task: Task | str) -> Task:
        """The registered task ``task`` names; :class:`TaskError` when the challenge did not register it."""
        name = task.name if isinstance(task, Task) else task
        found = self.tasks.get(name) if isinstance(name, str) else None
        if found is None:
            shown = name if isinstance(name, str) else getattr(task, "__qualname__", type(task).__name__)
            registered = ", ".join(sorted(self.tasks)) or "none"
            raise TaskError(
                f"task {shown} is not registered: return it from the register_tasks hook (registered: {registered})"
            )
        return found

    # -- the one write about a job an attempt makes

    async def _write(self, attempt: Held, values: Mapping[str, Any], *, ends: bool = True) -> bool:
        """Set ``values`` on the attempt's job if the attempt still holds it (its token guards the write).

        ``False`` when another attempt or an operator has the job now. A write that ``ends`` the
        attempt also releases the lease. Retried a few times on a database fault, then raised.
        """
        guarded = (
            update(T)
            .where(T.c.id == attempt.id, T.c.lease_token == attempt.token, T.c.state == RUNNING)
            .values(**values, **({"lease_token": None, "lease_expires": None} if ends else {}))
        )
        for pause in (*WRITE_RETRIES, None):
            try:
                async with self.db.begin() as conn:
                    result = await conn.execute(guarded, execution_options=BOOK)
                    return result.rowcount == 1
            except Exception as exc:
                if pause is None:
                    raise
                log.warning("job %s: writing its state failed (%s); again in %gs", attempt.id, describe(exc), pause)
                await asyncio.sleep(pause)
        return False  # unreachable: the last pause raises

    async def _put_back(self, attempt: Held) -> None:
        await self._write(attempt, {"state": QUEUED, "attempts": T.c.attempts - 1})
