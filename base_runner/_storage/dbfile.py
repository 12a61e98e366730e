"""The database file on its volume: its history in the data dir, its identity, the space left around it.

Faults a runner must not hide (``docs/operating.md``, "When the disk or the
database file fails"):

- The file deleted or renamed under a running runner: SQLite goes on writing
  into the orphaned inode, and a restart would create an empty database and
  serve ``{}``. :meth:`DatabaseFile.identity_problem` compares the file at
  the path with the one opened.
- A data dir that held a database and has none now: the runner's record,
  ``<data dir>/.base-runner-db.json``, says so, and ``serve`` refuses to
  start until ``base-runner db init`` creates a new one on purpose.
- A full volume: SQLite maps its ``-shm`` file, and touching a page of it on
  a full disk kills the process with SIGBUS, so free space is checked
  before the database is opened.
- An unclean stop whose write-ahead log is gone: the writes it held are
  lost; said loudly at startup.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path

from .._core.errors import ConfigError
from .._core.settings import RunnerSettings, database_path
from . import durable

log = logging.getLogger("base_runner")

RECORD_FILE = ".base-runner-db.json"
_MB = 1024 * 1024


def volume_of(path: Path) -> Path:
    """The mount point of the filesystem that holds ``path``."""
    path = path.resolve()
    while not path.is_mount():
        path = path.parent
    return path


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged writer may still use on ``folder``'s filesystem."""
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def read_only(folder: Path) -> bool:
    """Whether ``folder``'s filesystem is mounted (or was remounted) read-only."""
    return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)


class DatabaseFile:
    """The runner's view of its SQLite file at ``path``, recorded in ``data_dir``.

    :param min_free: bytes the volume must have free to open the database
        and to be reported ready.
    """

    def __init__(self, path: Path, data_dir: Path, min_free: int) -> None:
        self.path = path
        self.folder = path.parent
        self.data_dir = data_dir
        self.record = data_dir / RECORD_FILE
        self.min_free = min_free
        self._identity: tuple[int, int] | None = None

    @classmethod
    def of(cls, settings: RunnerSettings) -> DatabaseFile:
        """The database file ``settings`` name, recorded in their data dir."""
        return cls(database_path(settings), settings.data_dir, int(settings.min_free_mb * _MB))

    def _read_record(self) -> tuple[dict[str, object] | None, str]:
        """The record (``{}`` when there is none: a new data dir), or ``None`` and why it cannot be read."""
        try:
            text = self.record.read_text()
        except FileNotFoundError:
            return {}, ""
        except OSError as exc:
            return None, str(exc.strerror)
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            return None, "it is empty" if not text.strip() else "it is not a JSON object"
        return record, ""

    def _write_record(self, running: int | None) -> None:
        record = json.dumps({"database": str(self.path), "running": running}) + "\n"
        durable.write_atomic(self.record, record.encode(), self.data_dir)

    def check_before_open(self, *, create: bool = False) -> None:
        """Refuse (:class:`ConfigError`, exit 2) to open a database the runner must not open.

        An unreadable record (a disk fault, a power cut on a runner older than
        0.2.0) is taken as "a database was here, its stop unknown", never as a
        new data dir: the runner keeps refusing to start without its database.

        :param create: the operator asked for a new database (``db init``)
            where the data dir's record names one that is gone.
        """
        self._check_space()
        record, unreadable = self._read_record()
        exists = self.path.exists()
        if record is None:
            # The runner writes its record only once it has opened a database: one that exists tells of one.
            log.warning(
                "the runner's record %s is unreadable (%s): the data dir held a database; %s %s, and whether "
                "the previous runner stopped cleanly is unknown",
                self.record,
                unreadable,
                self.path,
                "exists" if exists else "is missing",
            )
            record = {"database": str(self.path), "running": "unknown"}
        had = record.get("database")
        if had is not None and not exists and not create:
            raise ConfigError(
                f"the database {had} this data dir held is gone: starting would create an empty one and serve "
                "empty weights. Restore it from a backup, or run `base-runner db init` to start a new, empty database"
            )
        running = record.get("running")
        if running is not None and exists:
            wal = self.path.with_name(self.path.name + "-wal")
            if wal.exists():
                log.warning(
                    "the previous runner on this data dir (pid %s) did not stop cleanly; SQLite recovers its "
                    "committed writes from %s",
                    running,
                    wal,
                )
            elif running == "unknown":
                log.warning(
                    "no write-ahead log %s: if the previous runner stopped cleanly, nothing is lost; if not, "
                    "what it acknowledged since its last checkpoint is",
                    wal,
                )
            else:
                log.error(
                    "DATA LOSS: the previous runner on this data dir (pid %s) did not stop cleanly, and its "
                    "write-ahead log %s is gone: every write it acknowledged since its last checkpoint is lost. "
                    "Stop and restore the database with its -wal file from a backup if you have one",
                    running,
                    wal,
                )

    def _check_space(self) -> None:
        free = free_bytes(self.folder)
        if free < self.min_free:
            raise ConfigError(
                f"the volume {volume_of(self.folder)} (holding {self.path}) has {free / _MB:.1f} MB free, under the "
                f"{self.min_free / _MB:g} MB the runner needs to open the database safely (CHALLENGE_MIN_FREE_MB): "
                "free space on it or grow it"
            )

    def opened(self) -> None:
        """Remember which file the database is, and record the data dir as holding it, in use."""
        stat = self.path.stat()
        self._identity = (stat.st_dev, stat.st_ino)
        self._write_record(running=os.getpid())

    def stopped(self) -> None:
        """Record a clean stop: the WAL was checkpointed and the connections closed."""
        if self._identity is not None and self.identity_problem() is None:
            try:
                self._write_record(running=None)
            except OSError as exc:
                log.warning(
                    "could not record the clean stop in %s (%s): the next start warns of an unclean one",
                    self.record,
                    exc.strerror,
                )

    def identity_problem(self) -> str | None:
        """Why the file at the path is not the one the runner opened; ``None`` when it is (or none was opened)."""
        if self._identity is None:
            return None
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return f"the database file {self.path} was deleted or renamed under the running runner"
        except OSError as exc:
            return f"the database file {self.path} cannot be checked: {exc.strerror}"
        if (stat.st_dev, stat.st_ino) != self._identity:
            return f"the database file {self.path} was replaced by another file under the running runner"
        return None

    def space_problem(self) -> str | None:
        """Why the volume cannot take writes now (full or read-only); ``None`` when it can."""
        try:
            if read_only(self.folder):
                return f"the volume {volume_of(self.folder)} is read-only (a failing disk remounts so): writes fail"
            free = free_bytes(self.folder)
        except OSError as exc:
            return f"the volume holding {self.path} cannot be checked: {exc.strerror}"
        if free < self.min_free:
            return (
                f"the volume {volume_of(self.folder)} has {free / _MB:.1f} MB free, under "
                f"{self.min_free / _MB:g} MB (CHALLENGE_MIN_FREE_MB): writes may fail; free space or grow it"
            )
        return None


def disk_fault(exc: BaseException, dbfile: DatabaseFile) -> tuple[int, str, str] | None:
    """``(status, code, detail)`` when ``exc`` is SQLite failing on the disk, not on the statement; else ``None``.

    A full volume is ``507``; a read-only or failing one ``503``.
    """
    orig = getattr(exc, "orig", exc)
    code = getattr(orig, "sqlite_errorcode", None)
    if not isinstance(code, int):
        return None
    primary = code & 0xFF
    name = getattr(orig, "sqlite_errorname", str(code))
    if primary == sqlite3.SQLITE_FULL:
        return (
            507,
            "disk_full",
            f"the volume {volume_of(dbfile.folder)} is full ({name}): the write was not saved; "
            "free space on it or grow it",
        )
    if primary in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN):
        return (
            503,
            "disk_failed",
            f"the database file {dbfile.path} cannot be written ({name}): the write was not saved; "
            "the disk may be failing or read-only: check the node's kernel log",
        )
    return None
