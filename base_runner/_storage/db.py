"""``Base`` and ``database``: the challenge's SQLite, safe to write from any request.

Write strategy. SQLite allows one writer at a time, and a transaction that
reads first and writes later fails with ``SQLITE_BUSY_SNAPSHOT`` when another
connection wrote in between: no busy timeout retries that. So every session
from :meth:`Database.session` and :meth:`Database.session_dependency` runs on
the one writer connection of this process, checked out from a pool of size
one (the pool is the in-process write lock, taken at the session's first
statement and given back at commit, rollback or close), and every
transaction on it starts with ``BEGIN IMMEDIATE`` (which also queues behind
writers in other processes, within the busy timeout). A transaction that
reads then writes therefore always writes on the snapshot it read: check,
then insert, loses no update. One writer connection also keeps clear of
SQLite's WAL-reset bug, which needs several connections writing at once.

Sessions opened with ``readonly=True`` use a separate small pool of
``query_only`` connections that run alongside the writer, for reads that
need no lock: ``get_weights``, reports, pages.

Do not open a second session while the first holds a transaction: with one
writer connection the second waits for the first (after ``POOL_TIMEOUT``
seconds it raises :class:`WriterBusy`, which names the holder).

Group commit. A session's ``await session.commit()`` gives the writer to the
next waiting session before its ``COMMIT``, and one ``COMMIT`` (one ``fsync``)
then makes every transaction released meanwhile durable (see
:mod:`base_runner._storage.driver`). ``commit()`` still returns only once its work is
on disk, and raises if that ``COMMIT`` failed; a session that began while
other transactions waited for their commit could read their work, so the
request is not answered before that commit either (:mod:`base_runner._storage.unsaved`),
nor does :meth:`Database.session` return before it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import event, inspect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import AsyncAdaptedQueuePool

from .._core.events import Events
from . import driver

log = logging.getLogger("base_runner")

#: Milliseconds a connection waits for another process's lock before failing.
BUSY_TIMEOUT_MS = 10_000
#: Seconds a session waits for the writer connection.
POOL_TIMEOUT = 30
#: Read-only connections that run beside the writer.
READERS = 4
#: What holds the writer when a session takes it: the request (``POST /path``) set by the
#: response guard of :mod:`base_runner._storage.unsaved`, else the task.
holder_name: ContextVar[str | None] = ContextVar("base_runner_writer_holder", default=None)
#: The sessions :meth:`Database.session_dependency` opened for the current request, when a
#: response guard collects them.
request_sessions: ContextVar[list[AsyncSession] | None] = ContextVar("base_runner_request_sessions", default=None)
#: Execution option of the runner's own bookkeeping writes (the jobs table): they do not count as a change
#: of the challenge's data, so they leave :attr:`Database.generation`, and the weights cached on it, alone.
BOOKKEEPING = "base_runner_bookkeeping"


@dataclass(frozen=True)
class WriterEvent:
    """What the writer connection did: a ``commit``, a ``rollback``, or a ``wait`` of ``seconds`` to get it."""

    kind: Literal["commit", "rollback", "wait"]
    seconds: float = 0.0


_COMMIT, _ROLLBACK = WriterEvent("commit"), WriterEvent("rollback")


class WriterBusy(RuntimeError):
    """A session waited ``POOL_TIMEOUT`` seconds for the writer connection, which another session holds."""


class _CancelledReset(logging.Filter):
    """Drop SQLAlchemy's error for a connection reset that a cancelled task interrupted.

    A worker cancelled at shutdown in the middle of a statement leaves its
    connection to be reset, and that rollback is cancelled too; the pool
    then discards the connection, and SQLite rolls back the open
    transaction when it closes. Nothing acknowledged is lost, so it is not
    an error to report.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        cancelled = record.exc_info is not None and isinstance(record.exc_info[1], asyncio.CancelledError)
        if cancelled:
            log.debug("a connection reset was cancelled (a task stopped mid-statement); the connection is discarded")
        return not cancelled


for _pool in (AsyncAdaptedQueuePool.__name__, "WriterPool"):
    logging.getLogger(f"sqlalchemy.pool.impl.{_pool}").addFilter(_CancelledReset())


class WritesRefused(Exception):
    """The runner stopped taking writes (its database file is gone); ``str()`` says why."""


class Session(AsyncSession):
    """An ``AsyncSession`` whose ``commit()`` gives the writer back before its COMMIT, and waits for that COMMIT."""

    async def commit(self) -> None:
        released: list[driver.Group] = []
        token = driver.deferring.set(released)
        try:
            await super().commit()
        finally:
            driver.deferring.reset(token)
        for group in released:
            await outcome(group)


async def outcome(group: driver.Group) -> None:
    """Wait for ``group``'s COMMIT; its failure is raised as SQLAlchemy raises a failed commit's."""
    try:
        await group.wait()
    except sqlite3.Error as error:
        raise DBAPIError.instance("COMMIT", None, error, sqlite3.Error) from error


class Base(DeclarativeBase):
    """Declarative base for challenge models; the runner creates its tables at startup."""


class Database:
    """The process's SQLite database: one writer connection, a few readers.

    Challenge code uses the module-level instance, ``base_runner.database``;
    the runner points it at the selected database before the app starts.
    """

    def __init__(self) -> None:
        self._writer: AsyncEngine | None = None
        self._reader: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._read_sessions: async_sessionmaker[AsyncSession] | None = None
        #: Bumped by every commit that changed a row; caches compare it.
        self.generation = 0
        #: COMMITs the writer connection made: fewer than the transactions committed, when grouped.
        self.commits = 0
        #: Why writing sessions are refused, once the runner must stop writing.
        self.refusal: str | None = None
        #: Whether the writer's open transaction changed a row that is not committed yet.
        self.writes_pending = False
        #: Who holds the writer connection now, for :class:`WriterBusy`'s message.
        self.writer_holder: str | None = None
        #: The writer's commits, rollbacks and waits to check it out, for whoever watches (the metrics).
        self.events: Events[WriterEvent] = Events()
        #: Sessions waiting for the writer connection now.
        self.writer_waiting = 0
        #: The tasks on their way to commit a group of released transactions.
        self._committers: set[asyncio.Task[None]] = set()

    def configure(self, url: str, synchronous: str = "FULL") -> None:
        """Point the database at ``url`` (an ``sqlite+aiosqlite`` file URL).

        No connection is opened until first use.

        :param synchronous: SQLite's ``synchronous`` for the writer: ``FULL``
            syncs each commit before it returns, ``NORMAL`` leaves a commit
            to the OS until the next checkpoint.
        """
        self._writer = create_async_engine(
            url,
            module=driver.dbapi(),
            poolclass=_timed_pool(self),
            pool_size=1,
            max_overflow=0,
            pool_timeout=POOL_TIMEOUT,
        )
        self._reader = create_async_engine(
            url,
            module=driver.dbapi(),
            poolclass=AsyncAdaptedQueuePool,
            pool_size=READERS,
            max_overflow=0,
            pool_timeout=POOL_TIMEOUT,
        )
        _setup_writer(self._writer, self, synchronous)
        _setup_reader(self._reader)
        self.refusal = None
        self._sessions = async_sessionmaker(self._writer, class_=Session, expire_on_commit=False)
        self._read_sessions = async_sessionmaker(self._reader, expire_on_commit=False)

    @property
    def engine(self) -> AsyncEngine:
        """The async engine of the writer connection."""
        if self._writer is None:
            raise RuntimeError("base_runner.database is not configured: the runner configures it at startup")
        return self._writer

    @property
    def read_engine(self) -> AsyncEngine:
        """The async engine of the read-only connections."""
        self.engine  # noqa: B018 - the same "not configured" error
        assert self._reader is not None
        return self._reader

    @asynccontextmanager
    async def session(self, *, readonly: bool = False) -> AsyncIterator[AsyncSession]:
        """An ``AsyncSession`` for code outside a request (``get_weights``, workers).

        Commit explicitly with ``await session.commit()``; whatever is not
        committed when the block ends is rolled back.

        :param readonly: use a read-only connection that does not wait for
            writers; any write in it fails.
        """
        self.engine  # noqa: B018 - the same "not configured" error
        if self.refusal is not None and not readonly:
            raise WritesRefused(self.refusal)
        factory = self._read_sessions if readonly else self._sessions
        assert factory is not None
        # Outside a request (which collects them itself), wait for the commits of the transactions
        # whose work this session could read before returning: see the module's "Group commit".
        groups: list[driver.Group] | None = None if readonly or driver.joined.get() is not None else []
        token = None if groups is None else driver.joined.set(groups)
        try:
            async with factory() as session:
                try:
                    yield session
                except PoolTimeout as exc:
                    if readonly:
                        raise
                    holder = self.writer_holder or "another session"
                    raise WriterBusy(
                        f"waited {POOL_TIMEOUT} s for the writer connection, which {holder} still holds: commit or "
                        "close a session before opening another, and keep work that waits outside a transaction"
                    ) from exc
                finally:
                    if session.new or session.dirty or session.deleted:
                        log.warning(
                            "a session closed with changes never committed; they are rolled back "
                            "(call `await session.commit()` before returning)"
                        )
        finally:
            if token is not None:
                driver.joined.reset(token)
        for group in groups or ():
            await outcome(group)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """``engine.begin()`` whose COMMIT the transactions waiting for the writer share (group commit).

        Returns once the COMMIT is on disk, or raises its error, as
        ``engine.begin()`` does; the writer is free for the next transaction
        in the meantime.
        """
        released: list[driver.Group] = []
        token = driver.deferring.set(released)
        try:
            async with self.engine.begin() as conn:
                yield conn
        finally:
            driver.deferring.reset(token)
        for group in released:
            await outcome(group)

    async def session_dependency(self) -> AsyncIterator[AsyncSession]:
        """FastAPI dependency: a session for one request, safe to write through.

        ``Annotated[AsyncSession, Depends(database.session_dependency)]``.
        A request that ends with changes it did not commit is answered 500
        (see :mod:`base_runner._storage.unsaved`).
        """
        async with self.session() as session:
            sessions = request_sessions.get()
            if sessions is not None:
                sessions.append(session)
            yield session

    def unsaved(self, session: AsyncSession) -> bool:
        """Whether ``session`` holds changes it never committed: added, or flushed in its transaction."""
        if session.new or session.dirty or session.deleted:
            return True
        return session.bind is self._writer and session.in_transaction() and self.writes_pending

    async def readonly_session_dependency(self) -> AsyncIterator[AsyncSession]:
        """FastAPI dependency: a read-only session that never waits for writers."""
        async with self.session(readonly=True) as session:
            yield session

    async def create_all(self) -> list[str]:
        """Create the tables of every imported model that are missing; return their names.

        Existing tables are never altered.
        """
        async with self.engine.begin() as conn:
            return await conn.run_sync(_create_missing)

    async def ping(self) -> None:
        """Run a trivial query on a read connection; raises when the database does not answer."""
        async with self.read_engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def close(self) -> None:
        """Checkpoint the WAL into the main file and close every connection."""
        if self._writer is None or self._reader is None:
            return
        await self._reader.dispose()
        if self._committers:
            await asyncio.gather(*self._committers, return_exceptions=True)
        try:
            async with self._writer.connect() as conn:
                driver = (await conn.get_raw_connection()).driver_connection
                if driver is None:
                    raise RuntimeError("the writer connection is closed")
                # Outside any transaction, or SQLite refuses to checkpoint.
                await driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except Exception as exc:  # the database stays consistent without it
            log.warning("could not checkpoint the WAL at shutdown: %s", exc)
        await self._writer.dispose()

    def commit_soon(self) -> None:
        """Commit the writer's open group, if any, once the writer is free."""
        # In a context of its own, not that of the request that gave the connection back.
        task = asyncio.get_running_loop().create_task(
            self._commit_group(), name="base_runner: group commit", context=contextvars.Context()
        )
        self._committers.add(task)
        task.add_done_callback(self._committers.discard)

    async def _commit_group(self) -> None:
        while True:
            try:
                async with self.engine.connect() as conn:
                    raw = await conn.get_raw_connection()
                    connection = raw.dbapi_connection
                    assert isinstance(connection, driver.Connection)
                    await connection.commit_group()
                return
            except PoolTimeout:
                continue  # a session holds the writer beyond POOL_TIMEOUT (it is told so): keep waiting
            except Exception as exc:  # its waiters have the error
                log.debug("a group commit failed: %s", exc)
                return


def _timed_pool(database: Database) -> type[AsyncAdaptedQueuePool]:
    # A class, not an instance: the engine rebuilds its pool from the class on dispose.
    class WriterPool(AsyncAdaptedQueuePool):
        def _do_get(self) -> Any:
            started = time.perf_counter()
            database.writer_waiting += 1
            try:
                record = super()._do_get()
            except BaseException:
                # A waiter that gave up: the group it would have joined must not wait for it.
                if database.writer_waiting == 1:
                    database.commit_soon()
                raise
            finally:
                database.writer_waiting -= 1
            database.events.emit(WriterEvent("wait", time.perf_counter() - started))
            return record

    # SQLAlchemy names a pool's logger after its class and module: keep it under "sqlalchemy", quiet by
    # default, where _CancelledReset filters it.
    WriterPool.__module__ = AsyncAdaptedQueuePool.__module__
    return WriterPool


def _create_missing(conn: Any) -> list[str]:
    before = set(inspect(conn).get_table_names())
    Base.metadata.create_all(conn)
    return sorted(set(inspect(conn).get_table_names()) - before)


def _pragmas(dbapi_connection: Any, *statements: str) -> None:
    cursor = dbapi_connection.cursor()
    for statement in statements:
        cursor.execute(statement)
    cursor.close()


def _begin(conn: Any, statement: str) -> None:
    # Sent with the transaction's first statement, in its trip to aiosqlite's thread (base_runner._storage.driver).
    conn.connection.dbapi_connection.begin(statement)


def _setup_writer(engine: AsyncEngine, database: Database, synchronous: str) -> None:
    @event.listens_for(engine.sync_engine.pool, "checkout")
    def on_checkout(*_args: Any) -> None:
        task = asyncio.current_task()
        database.writer_holder = holder_name.get() or (f"the task {task.get_name()!r}" if task else None)

    @event.listens_for(engine.sync_engine.pool, "checkin")
    def on_checkin(dbapi_connection: Any, _record: Any) -> None:
        database.writer_holder = None
        # When no one waits for the writer, the group of transactions released to it is complete: a
        # task of its own commits it (one that the cancellation of this one's cannot stop half-way).
        # Otherwise the next one to take the writer joins the group.
        if dbapi_connection is not None and dbapi_connection.group is not None and not database.writer_waiting:
            database.commit_soon()

    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver, so that "begin" below decides.
        dbapi_connection.isolation_level = None

        # Bumped once a COMMIT that changed rows is done, not at SQLAlchemy's "commit" event,
        # which comes before it (and before a group's COMMIT): a weights computation that read
        # the database in between would otherwise be cached as current after the write.
        def on_committed(changed: bool) -> None:
            database.commits += 1
            if changed:
                database.generation += 1

        dbapi_connection.on_committed = on_committed
        dbapi_connection.grouping = True
        _pragmas(
            dbapi_connection,
            f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
            "PRAGMA journal_mode=WAL",
            f"PRAGMA synchronous={synchronous}",
            "PRAGMA foreign_keys=ON",
        )

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(conn: Any) -> None:
        _begin(conn, "BEGIN IMMEDIATE")

    @event.listens_for(engine.sync_engine, "after_cursor_execute")
    def on_execute(conn: Any, cursor: Any, _statement: Any, _parameters: Any, context: Any, _many: Any) -> None:
        if cursor.rowcount > 0:
            if context is None or not context.execution_options.get(BOOKKEEPING):
                conn.connection.dbapi_connection.changed()
            database.writes_pending = True

    @event.listens_for(engine.sync_engine, "commit")
    def on_commit(_conn: Any) -> None:
        database.writes_pending = False
        database.events.emit(_COMMIT)

    @event.listens_for(engine.sync_engine, "rollback")
    def on_rollback(_conn: Any) -> None:
        database.writes_pending = False
        database.events.emit(_ROLLBACK)


def _setup_reader(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        _pragmas(dbapi_connection, f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}", "PRAGMA query_only=ON")

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(conn: Any) -> None:
        # One snapshot for the whole session, so its queries agree with each other.
        _begin(conn, "BEGIN")


def sqlite_version() -> str:
    """The version of the SQLite library the driver is linked against."""
    return sqlite3.sqlite_version


def has_wal_reset_bug(version: str) -> bool:
    """Whether SQLite ``version`` has the WAL-reset corruption bug (3.7.0 up to 3.51.2).

    Fixed in 3.51.3, and backported to 3.50.7 and 3.44.6.
    """
    parts = tuple(int(part) for part in version.split(".")[:3])
    major_minor, patch = parts[:2], (parts[2] if len(parts) > 2 else 0)
    if parts < (3, 7, 0) or parts >= (3, 51, 3):
        return False
    return not ((major_minor == (3, 50) and patch >= 7) or (major_minor == (3, 44) and patch >= 6))


#: The process's database; challenge code imports it as ``from base_runner import database``.
database = Database()
