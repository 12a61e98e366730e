"""aiosqlite as SQLAlchemy drives it, in one trip to the driver's thread per statement.

aiosqlite runs each ``sqlite3`` call on a thread of its own, and every call is
one round trip: the event loop queues it, the thread wakes, runs it, and
wakes the loop with the result (about 60 µs of the loop's CPU on a small
machine, more on a busy one). SQLAlchemy's adaptation makes several per
statement (a cursor, the execute, the fetch, the cursor's close, a second
close after the result is read) and one more for the rollback of every
connection given back to its pool, even when no transaction is open.

This is the same adaptation with fewer trips, and nothing else changed: the
same thread, the same SQL in the same order, the same transactions.

- A statement is one trip: the cursor is made, executed, read to its end and
  closed on the driver's thread, and what SQLAlchemy reads of it (rows,
  ``description``, ``rowcount``, ``lastrowid``) comes back with the result.
- ``BEGIN`` is sent with the transaction's first statement, in the same trip,
  before it; a transaction with no statement sends nothing at all.
- A rollback or commit with no transaction open on the connection (the
  pool's reset on return, after a commit) is not sent: SQLite's own
  autocommit flag, read on the loop's thread while no call runs, says so.

Server-side cursors (``stream()``) keep SQLAlchemy's own adaptation.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_connection, AsyncAdapt_aiosqlite_dbapi
from sqlalchemy.util.concurrency import await_

_Result = tuple[Any, int, int | None, Sequence[Any]]


def _run(conn: sqlite3.Connection, begin: str | None, operation: str, parameters: Any, many: bool) -> _Result:
    """One statement, on the driver's thread: what SQLAlchemy reads of its cursor."""
    if begin is not None:
        conn.execute(begin)
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
    """SQLAlchemy's adapted aiosqlite connection, with one trip per statement and no empty rollbacks."""

    __slots__ = ("_begin", "on_committed")

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        #: The ``BEGIN`` to send before the next statement; see :meth:`begin`.
        self._begin: str | None = None
        #: Called once SQLite has committed; SQLAlchemy's ``commit`` event fires before the COMMIT is sent.
        self.on_committed: Callable[[], None] | None = None

    def begin(self, statement: str) -> None:
        """Open a transaction with ``statement`` (``BEGIN IMMEDIATE``) in the trip of its first statement."""
        self._begin = statement

    def cursor(self, server_side: bool = False) -> Any:
        return super().cursor(server_side=True) if server_side else Cursor(self)

    def _trip(self, operation: str, parameters: Any, many: bool) -> _Result:
        begin, self._begin = self._begin, None
        driver = self._connection
        try:
            return await_(driver._execute(_run, driver._conn, begin, operation, parameters, many))
        except Exception as error:
            self._handle_exception(error)

    def _open(self) -> bool:
        """Whether a transaction is open or about to be; forgets a ``BEGIN`` no statement followed."""
        if self._begin is not None:
            self._begin = None
            return False
        driver = self._connection._connection
        return driver is not None and driver.in_transaction

    def commit(self) -> None:
        if self._open():
            super().commit()
            if self.on_committed is not None:
                self.on_committed()

    def rollback(self) -> None:
        if self._open():
            super().rollback()


class DBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The module SQLAlchemy's aiosqlite dialect drives (``create_async_engine(module=...)``)."""

    def connect(self, *args: Any, **kwargs: Any) -> Connection:
        adapted = super().connect(*args, **kwargs)
        return Connection(self, adapted._connection)


def dbapi() -> DBAPI:
    """A module for ``create_async_engine(url, module=dbapi())`` on an ``sqlite+aiosqlite`` URL."""
    import aiosqlite

    return DBAPI(aiosqlite, sqlite3)
