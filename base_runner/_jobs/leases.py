"""The claim, the leases and the queue's bookkeeping: the statements the scheduler runs on the jobs table.

One guarded ``UPDATE ... RETURNING`` claims; a timer renews the leases of
this process's attempts, takes back the expired ones of processes that are
gone, prunes finished jobs and counts the queue, every third of a lease.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import bindparam, delete, func, select, text, update

from .._core.errors import describe
from .base import BOOK, SchedulerBase, log
from .table import CANCELLED, DEAD, LIVE, QUEUED, RUNNING, SUCCEEDED
from .table import jobs as T

#: Seconds between prunings of finished jobs, at most (a retention shorter than twice this prunes more often).
PRUNE_EVERY = 60.0
#: Jobs one pruning deletes at most, so that it holds the writer briefly.
PRUNE_BATCH = 500


class Leases(SchedulerBase):
    """The scheduler's statements: claim, next due, and what its timer does every third of a lease."""

    # -- the claim

    def _claim_statement(self, names: tuple[str, ...]) -> Any:
        statement = self._claims.get(names)
        if statement is None:
            picks = " UNION ALL ".join(
                f"SELECT * FROM (SELECT id, priority, run_at FROM {T.name} WHERE state = '{QUEUED}' "
                f"AND task = :t{i} AND run_at <= :now ORDER BY priority DESC, run_at, id LIMIT :n{i})"
                for i in range(len(names))
            )
            statement = text(
                f"UPDATE {T.name} SET state = '{RUNNING}', attempts = attempts + 1, "
                "lease_token = :batch || '.' || id, lease_expires = :expires, started_at = :now, "
                "progress = NULL, message = NULL "
                f"WHERE id IN (SELECT id FROM ({picks}) ORDER BY priority DESC, run_at, id LIMIT :free) "
                "RETURNING id, task, args, attempts, key, lease_token, correlation_id"
            )
            self._claims[names] = statement
        return statement

    async def _claim(self, slots: Mapping[str, int], free: int | None = None) -> list[Any]:
        names = tuple(sorted(slots))
        now = self.now()
        params: dict[str, Any] = {
            "now": now,
            "expires": now + self.lease,
            "batch": secrets.token_hex(8),
            "free": free if free is not None else self.concurrency - len(self._running),
        }
        for i, name in enumerate(names):
            params[f"t{i}"], params[f"n{i}"] = name, slots[name]
        async with self.db.begin() as conn:
            result = await conn.execute(self._claim_statement(names), params, execution_options=BOOK)
            return list(result)

    async def _next_due(self, slots: Iterable[str]) -> float | None:
        """The earliest ``run_at`` of a queued job of a task in ``slots``."""
        async with self.db.read_engine.connect() as conn:
            due = await conn.scalar(select(func.min(T.c.run_at)).where(T.c.state == QUEUED, T.c.task.in_(list(slots))))
        return None if due is None else float(due)

    # -- leases, take-overs, pruning, counts: every third of a lease

    async def _ticks(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            self.alive_at = time.monotonic()
            try:
                await self._renew()
                await self._take_over()
                if time.monotonic() - self._last_prune >= min(PRUNE_EVERY, self.retention / 2):
                    await self._prune()
                await self._refresh()
            except Exception as exc:
                log.error("jobs: a lease renewal or take-over failed (%s); trying again next tick", describe(exc))

    async def _renew(self) -> None:
        held = {a.token: a for a in self._running.values() if a.stop_reason is None}
        if not held:
            return
        async with self.db.engine.begin() as conn:
            result = await conn.execute(
                update(T)
                .where(T.c.state == RUNNING, T.c.lease_token.in_(list(held)))
                .values(lease_expires=self.now() + self.lease)
                .returning(T.c.lease_token),
                execution_options=BOOK,
            )
            renewed = {row[0] for row in result}
        for token, attempt in held.items():
            if token not in renewed and attempt.id in self._running:
                log.warning(
                    "job %s (%s): its lease was taken over; the attempt is cancelled", attempt.id, attempt.task.name
                )
                attempt.stop("lease")

    async def _take_over(self) -> None:
        """Take back the expired leases no attempt of this process holds: each counts as a failed attempt."""
        now = self.now()
        expired = await self._expired(now)
        if not expired:
            return
        buried = {row.id for row in expired if self._spent(row)}
        error = f"lost its lease: the runner running it was killed or stalled (leases last {self.lease:g}s)"
        params = [
            {
                "job": row.id,
                "token": row.lease_token,
                "error": f"attempt {row.attempts} {error}",
                "state": DEAD if row.id in buried else QUEUED,
                "finished": now if row.id in buried else None,
                "now": now,
            }
            for row in expired
        ]
        async with self.db.engine.begin() as conn:
            await conn.execute(
                update(T)
                .where(T.c.id == bindparam("job"), T.c.lease_token == bindparam("token"), T.c.state == RUNNING)
                .values(
                    state=bindparam("state"),
                    run_at=bindparam("now"),
                    finished_at=bindparam("finished"),
                    lease_token=None,
                    lease_expires=None,
                    error=bindparam("error"),
                ),
                params,
                execution_options=BOOK,
            )
        for row in expired:
            log.warning(
                "job %s %s: attempt %d lost its lease (its runner was killed or stalled); %s",
                row.id,
                row.task,
                row.attempts,
                "it is dead, its last attempt spent" if row.id in buried else "it runs again",
                extra={"job_id": str(row.id), "task": row.task, "outcome": "takeover"},
            )
            self._emit("takeover", row.task, attempt_failed=True)
            if row.id in buried:
                self._emit("dead", row.task)
        self._wake.set()

    async def _expired(self, now: float) -> list[Any]:
        """The running jobs whose lease expired and that no attempt of this process holds."""
        mine = [a.token for a in self._running.values()]
        async with self.db.read_engine.connect() as conn:
            return list(
                await conn.execute(
                    select(T.c.id, T.c.task, T.c.attempts, T.c.lease_token).where(
                        T.c.state == RUNNING, T.c.lease_expires < now, T.c.lease_token.not_in(mine)
                    )
                )
            )

    def _spent(self, row: Any) -> bool:
        """Whether the job's lost attempt was its last (a task no longer registered keeps it queued)."""
        task = self.tasks.get(row.task)
        return task is not None and row.attempts >= task.max_attempts

    async def _prune(self) -> None:
        self._last_prune = time.monotonic()
        cutoff = self.now() - self.retention
        old = (
            select(T.c.id)
            .where(T.c.state.in_((SUCCEEDED, CANCELLED)), T.c.finished_at < cutoff)
            .limit(PRUNE_BATCH)
            .scalar_subquery()
        )
        async with self.db.engine.begin() as conn:
            result = await conn.execute(delete(T).where(T.c.id.in_(old)), execution_options=BOOK)
        if result.rowcount:
            log.info("jobs: pruned %d finished jobs older than %gs", result.rowcount, self.retention)

    async def _refresh(self) -> None:
        """Count the live and dead jobs by task and state, and how long the oldest due job has waited."""
        now = self.now()
        async with self.db.read_engine.connect() as conn:
            rows = await conn.execute(
                select(
                    T.c.task,
                    T.c.state,
                    func.count(),
                    func.min(T.c.run_at).filter(T.c.run_at <= now),
                )
                .where(T.c.state.in_((*LIVE, DEAD)))
                .group_by(T.c.task, T.c.state)
            )
            depth, oldest = {}, {}
            for name, state, count, due in rows:
                depth[(name, state)] = count
                if state == QUEUED and due is not None:
                    oldest[name] = max(0.0, now - due)
        self.depth, self.oldest_due = depth, oldest
