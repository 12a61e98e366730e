"""Apply a manual fix (the SQL that ``db check`` prints) to the database file, safely.

The image has no ``sqlite3`` shell, and a shell beside a running server would
be a second writing process. So the fix runs here, with Python's own SQLite:
only while no runner holds the data dir (the lock ``serve`` holds, see
:mod:`base_runner._storage.datadir`), after a backup of the whole database, in one
transaction that is rolled back whole if any statement fails. A dry run does
the same in a transaction that is always rolled back, and writes no backup.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .._core.errors import ConfigError
from . import durable
from .datadir import DataDirLock

#: Where backups go, under the data dir.
BACKUPS = "backups"


@dataclass
class Applied:
    """What :func:`apply` did."""

    #: Each statement with the number of rows it changed.
    statements: list[tuple[str, int]] = field(default_factory=list)
    #: The backup written before the change; ``None`` for a dry run.
    backup: Path | None = None


def _backup(conn: sqlite3.Connection, data_dir: Path, database: Path) -> Path:
    folder = data_dir / BACKUPS
    durable.make_dirs(folder, data_dir)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = folder / f"{database.name}.{stamp}.bak"
    copy = sqlite3.connect(target)
    try:
        conn.backup(copy)  # a consistent copy, the WAL's committed pages included
    finally:
        copy.close()
    durable.sync(target, data_dir)
    return target


def apply(data_dir: Path, database: Path, statements: list[str], *, dry_run: bool) -> Applied:
    """Run ``statements`` on ``database`` in one transaction; roll back on a dry run or a failure.

    Raises :class:`ConfigError` (nothing changed) when a runner holds
    ``data_dir``, the database is missing, or a statement fails.
    """
    if not database.is_file():
        raise ConfigError(f"no database at {database}; nothing was changed")
    lock = DataDirLock(data_dir)
    try:
        lock.acquire(wait=0)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; db exec changes nothing while a runner holds the database") from None
    try:
        conn = sqlite3.connect(database, isolation_level=None)
        try:
            applied = Applied()
            if not dry_run:
                applied.backup = _backup(conn, data_dir, database)
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in statements:
                    before = conn.total_changes
                    conn.execute(statement)
                    applied.statements.append((statement, conn.total_changes - before))
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                kept = f"; the backup {applied.backup} is kept" if applied.backup else ""
                raise ConfigError(f"{statement!r} failed: {exc}; nothing was changed{kept}") from None
            conn.execute("ROLLBACK" if dry_run else "COMMIT")
            return applied
        finally:
            conn.close()
    finally:
        lock.release()
