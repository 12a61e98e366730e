"""aiosqlite as SQLAlchemy drives it, in one trip to the driver's thread per statement, with group commit.

aiosqlite runs each ``sqlite3`` call on a thread of its own, and every call is
one round trip: the event loop queues it, the thread wakes, runs it, and
wakes the loop with the result (about 60 µs of the loop's CPU on a small
machine, more on a busy one). SQLAlchemy's adaptation makes several per
statement (a cursor, the execute, the fetch, the cursor's close, a second
close after the result is read) and one more for the rollback of every
connection given back to its pool, even when no transaction is open.

This is the same adaptation with fewer trips:

- A statement is one trip: the cursor is made, executed, read to its end and
  closed on the driver's thread, and what SQLAlchemy reads of it (rows,
  ``description``, ``rowcount``, ``lastrowid``) comes back with the result.
- ``BEGIN`` is sent with the transaction's first statement, in the same trip,
  before it; a transaction with no statement sends nothing at all.
- A rollback or commit with no transaction open (the pool's reset on
  return, after a commit) is not sent.

Group commit (the writer only). Each ``COMMIT`` under ``synchronous=FULL``
waits for its own ``fsync``; with several requests waiting for the writer
they would sync one after the other. So a transaction whose commit can wait
after its connection is given back (:func:`deferring`, which
``base_runner._storage.db``'s sessions use) is *released* instead: its work stays in
SQLite's open transaction, the next transaction on the connection runs
inside a ``SAVEPOINT`` of it (so that its rollback undoes only its own work),
and one ``COMMIT`` later, by :class:`Group`'s committer, makes all of them
durable at once. Every transaction released into a group waits for that
``COMMIT``; if it fails, all of them fail and the transaction is rolled back,
so nothing of the group is kept. A transaction that began inside a group saw
the group's uncommitted work, so it is recorded in :data:`joined` and must not
be answered before the group's commit either (``base_runner._storage.unsaved`` waits).
A commit that is not deferred (``engine.begin()``, ``AsyncConnection.commit``,
``async with session.begin()``) commits the open group with it, at once.

Server-side cursors (``stream()``) keep SQLAlchemy's own adaptation.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any

from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_connection, AsyncAdapt_aiosqlite_dbapi
from sqlalchemy.util.concurrency import await_

_Result = tuple[Any, int, int | None, Sequence[Any]]

#: Set by a caller whose commit may wait after its connection is given back: the driver then
#: releases the transaction into a group and appends the group here, for the caller to wait on.
deferring: ContextVar[list[Group] | None] = ContextVar("base_runner_deferring", default=None)
#: The groups whose uncommitted work the current request's transactions could read, when a caller
#: (``base_runner._storage.unsaved``, ``Database.session``) collects them to wait before answering.
joined: ContextVar[list[Group] | None] = ContextVar("base_runner_joined", default=None)


class Group:
    """Transactions released to one ``COMMIT``; :meth:`wait` returns once it is on disk, or raises its error."""

    __slots__ = ("changed", "done")

    def __init__(self) -> None:
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A waiter cancelled at shutdown leaves the outcome unread: not an error to report.
        self.done.add_done_callback(lambda done: done.cancelled() or done.exception())
        #: Whether a transaction in it changed a row.
        self.changed = False

    async def wait(self) -> None:
        # Shielded: a waiter's cancellation must not cancel the commit the others wait for.
        await asyncio.shield(self.done)

    def fail(self, error: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(error)


def _run(conn: sqlite3.Connection, prelude: tuple[str, ...], operation: str, parameters: Any, many: bool) -> _Result:
    """One statement, on the driver's thread: what SQLAlchemy reads of its cursor."""
    for statement in prelude:
        conn.execute(statement)
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        else:
            cursor.execute(operation, () if parameters is None else parameters)
        rows = cursor.fetchall() if cursor.description else ()
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


def _commit(conn: sqlite3.Connection, prelude: tuple[str, ...]) -> None:
    """The group's COMMIT, on the driver's thread; on failure nothing of the transaction stays."""
    try:
        for statement in prelude:
            conn.execute(statement)
        conn.execute("COMMIT")
    except sqlite3.Error:
        # A COMMIT refused (a deferred constraint, a full disk) leaves the transaction open.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class Cursor:
    """A DBAPI cursor whose statement has run to its end in one trip; it holds the rows."""

    server_side = False
    __slots__ = ("_connection", "_rows", "arraysize", "description", "lastrowid", "rowcount")

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._rows: deque[Any] = deque()
        self.arraysize = 1
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None

    def _execute(self, operation: str, parameters: Any, many: bool) -> None:
        description, self.rowcount, self.lastrowid, rows = self._connection._trip(operation, parameters, many)
        self.description = description
        self._rows = deque(rows)

    def execute(self, operation: str, parameters: Any = None) -> None:
        self._execute(operation, parameters, many=False)

    def executemany(self, operation: str, seq_of_parameters: Any) -> None:
        self._execute(operation, seq_of_parameters, many=True)

    async def _async_soft_close(self) -> None:
        """SQLAlchemy's asyncio layer closes a read cursor this way; this one is closed already."""

    def close(self) -> None:
        self._rows.clear()

    def fetchone(self) -> Any:
        return self._rows.popleft() if self._rows else None

    def fetchmany(self, size: int | None = None) -> list[Any]:
        rows = self._rows
        return [rows.popleft() for _ in range(min(self.arraysize if size is None else size, len(rows)))]

    def fetchall(self) -> list[Any]:
        rows = list(self._rows)
        self._rows.clear()
        return rows

    def __iter__(self) -> Any:
        while self._rows:
            yield self._rows.popleft()


class Connection(AsyncAdapt_aiosqlite_connection):
    """SQLAlchemy's adapted aiosqlite connection, with one trip per statement, no empty rollbacks, group commit."""

    __slots__ = (
        "_begin",
        "_changed",
        "_error",
        "_group",
        "_member",
        "_pending",
        "_savepoint",
        "_savepoints",
        "grouping",
        "on_committed",
    )

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        #: The ``BEGIN`` to send before the next statement; see :meth:`begin`.
        self._begin: str | None = None
        #: Statements owed before the next one (a released savepoint), sent in its trip.
        self._pending: tuple[str, ...] = ()
        #: Whether a transaction of SQLAlchemy's has sent its first statement and not ended.
        self._member = False
        #: Its savepoint, when it began inside an open group.
        self._savepoint: str | None = None
        self._savepoints = 0
        #: Whether it changed the data: see :meth:`changed`.
        self._changed = False
        #: The group its released transactions are in, until that group's COMMIT.
        self._group: Group | None = None
        #: The last error a statement raised, for a group that SQLite rolled back after it.
        self._error: BaseException | None = None
        #: Called once a COMMIT is done, with whether it changed rows; SQLAlchemy's ``commit`` event fires
        #: before it.
        self.on_committed: Callable[[bool], None] | None = None
        #: Whether a deferred commit releases its transaction into a group (the writer's); if not,
        #: every commit is immediate.
        self.grouping = False

    @property
    def group(self) -> Group | None:
        """The group of released transactions waiting for their COMMIT, if any."""
        return self._group

    def begin(self, statement: str) -> None:
        """Open a transaction with ``statement`` (``BEGIN IMMEDIATE``) in the trip of its first statement."""
        self._begin = statement

    def cursor(self, server_side: bool = False) -> Any:
        return super().cursor(server_side=True) if server_side else Cursor(self)

    def _prelude(self) -> tuple[str, ...]:
        statements, self._pending = self._pending, ()
        if self._begin is not None:
            begin, self._begin = self._begin, None
            group = self._group
            if group is None:
                statements += (begin,)
            else:
                # Inside the group's open transaction: its own savepoint, so its rollback undoes only its work.
                self._savepoints += 1
                self._savepoint = f"base_runner_member_{self._savepoints}"
                statements += (f"SAVEPOINT {self._savepoint}",)
                collected = joined.get()
                if collected is not None:
                    collected.append(group)
            self._member, self._changed = True, False
        return statements

    def _trip(self, operation: str, parameters: Any, many: bool) -> _Result:
        prelude = self._prelude()
        driver = self._connection
        try:
            result = await_(driver._execute(_run, driver._conn, prelude, operation, parameters, many))
        except Exception as error:
            self._error = error
            if self._member and not self._in_transaction():
                # Its BEGIN failed (busy), or SQLite rolled the whole transaction back after this error
                # (a full disk, an I/O error): nothing to end, and the group's released work is gone.
                self._member, self._savepoint = False, None
                self._fail_group(error)
            self._handle_exception(error)
        return result

    def changed(self) -> None:
        """Count the open transaction as a change of the data (``base_runner._storage.db`` decides which are)."""
        self._changed = True

    def _in_transaction(self) -> bool:
        driver = self._connection._connection
        return driver is not None and driver.in_transaction

    def _end_member(self) -> bool:
        """End SQLAlchemy's transaction here; whether it had sent a statement (and so holds work or a lock)."""
        if self._begin is not None:
            self._begin = None
            return False
        member, self._member = self._member, False
        return member

    def commit(self) -> None:
        if not self._end_member():
            return
        savepoint, self._savepoint = self._savepoint, None
        if savepoint is not None:
            self._pending += (f"RELEASE {savepoint}",)
        group = self._group
        if group is None:
            group = self._group = Group()
        group.changed = group.changed or self._changed
        released = deferring.get()
        if released is not None and self.grouping:
            released.append(group)  # committed when the connection is given back with no one waiting for it
            return
        try:
            await_(self.commit_group())
        except Exception as error:
            self._handle_exception(error)

    def rollback(self) -> None:
        if not self._end_member():
            return
        savepoint, self._savepoint = self._savepoint, None
        if savepoint is None:
            # Began the transaction: no group was open, so all of it is this transaction's.
            if self._in_transaction():
                super().rollback()
            return
        if not self._in_transaction():
            # SQLite rolled the whole transaction back after an error (a full disk, an I/O error): the
            # group's released work went with it.
            self._fail_group(self._error)
            return
        # Undone before anything else runs on the connection: sent with the next trip, the COMMIT's included.
        self._pending += (f"ROLLBACK TO {savepoint}", f"RELEASE {savepoint}")

    async def commit_group(self) -> None:
        """COMMIT the open group now; its waiters wake with the outcome, which this also raises."""
        group = self._group
        if group is None:
            return
        self._group = None
        prelude, self._pending = self._pending, ()
        driver = self._connection
        if not self._in_transaction():
            error: BaseException = self._rolled_back(self._error)
            group.fail(error)
            raise error
        try:
            await driver._execute(_commit, driver._conn, prelude)
        except Exception as error:
            group.fail(error)
            raise
        if self.on_committed is not None:
            self.on_committed(group.changed)
        group.done.set_result(None)

    async def settle(self) -> None:
        """Commit the open group from inside a transaction that only read, which goes on as a new one.

        For a request that read the group's uncommitted work and still holds
        the connection as it answers: no committer could take it from it.
        """
        if self._group is None or self._changed:
            return
        member = self._member
        # The COMMIT ends its savepoint with the rest.
        self._member, self._savepoint = False, None
        await self.commit_group()
        if member:
            self._begin = "BEGIN IMMEDIATE"

    def _rolled_back(self, cause: BaseException | None) -> sqlite3.OperationalError:
        error = sqlite3.OperationalError(
            "the transaction was rolled back by SQLite"
            + (f" after an error ({cause})" if cause is not None else "")
            + ": nothing of it was committed"
        )
        error.__cause__ = cause
        return error

    def _fail_group(self, cause: BaseException | None) -> None:
        group, self._group = self._group, None
        self._pending = ()
        if group is not None:
            group.fail(self._rolled_back(cause))

    def close(self) -> None:
        self._fail_group(None)  # SQLite rolls back what was not committed when the connection closes
        super().close()

    def terminate(self) -> None:
        self._fail_group(None)
        super().terminate()


class DBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The module SQLAlchemy's aiosqlite dialect drives (``create_async_engine(module=...)``)."""

    def connect(self, *args: Any, **kwargs: Any) -> Connection:
        adapted = super().connect(*args, **kwargs)
        return Connection(self, adapted._connection)


def dbapi() -> DBAPI:
    """A module for ``create_async_engine(url, module=dbapi())`` on an ``sqlite+aiosqlite`` URL."""
    import aiosqlite

    return DBAPI(aiosqlite, sqlite3)
