"""The pusher's own ledger: every request it sends, on disk before it is sent.

A SQLite file of the runner's, ``<data dir>/.base-runner/push.sqlite3``,
apart from the challenge's database, so that neither a challenge's models nor
the schema-drift check ever see it. Each change is committed with
``synchronous=FULL`` (fsync'd) before the pusher acts on it: a request is
stored before its first byte leaves, and a retry after a crash resends
exactly the stored bytes.

One row per request, keyed by ``(epoch, revision)``: the primary key is what
guarantees that an epoch never gets two different payloads under one
revision. A row's ``state``:

- ``pending``: stored, not yet answered for good; resent until it is;
- ``acknowledged``: the master answered 200 (``idempotent`` says if it had it already);
- ``sealed``: 409, the epoch is sealed or stale; nothing more is pushed for it;
- ``conflict``: 409, the master holds other bytes under this nonce or revision;
- ``rejected``: 413, 415 or 422; these bytes are never sent again;
- ``abandoned``: its epoch ended or its snapshot expired before an answer.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .._storage import durable

T = TypeVar("T")

STORE_DIR = ".base-runner"
STORE_FILE = "push.sqlite3"

FINAL_STATES = ("acknowledged", "sealed", "conflict", "rejected", "abandoned")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pushes (
    slug TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    revision INTEGER NOT NULL,
    nonce TEXT NOT NULL UNIQUE,
    body BLOB NOT NULL,
    payload_digest TEXT NOT NULL,
    weights_digest TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    state TEXT NOT NULL,
    snapshot_id TEXT,
    idempotent INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_status INTEGER,
    last_error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (slug, epoch, revision)
)
"""


def store_path(data_dir: Path) -> Path:
    """Where the ledger of the runner on ``data_dir`` lives."""
    return data_dir / STORE_DIR / STORE_FILE


@dataclass(frozen=True)
class Push:
    """One stored request and what became of it."""

    slug: str
    epoch: int
    revision: int
    nonce: str
    body: bytes
    payload_digest: str
    weights_digest: str
    expires_at: int
    state: str
    snapshot_id: str | None
    idempotent: bool | None
    attempts: int
    last_status: int | None
    last_error: str | None
    created_at: float
    updated_at: float

    def view(self) -> dict[str, object]:
        """What an operator is shown of it: everything but the body."""
        return {
            "epoch": self.epoch,
            "revision": self.revision,
            "state": self.state,
            "snapshot_id": self.snapshot_id,
            "idempotent": self.idempotent,
            "payload_digest": self.payload_digest,
            "nonce": self.nonce,
            "attempts": self.attempts,
            "last_status": self.last_status,
            "last_error": self.last_error,
        }


_COLUMNS = ", ".join(Push.__dataclass_fields__)


def _push(row: tuple[object, ...]) -> Push:
    push = Push(*row)  # type: ignore[arg-type]
    idempotent = None if push.idempotent is None else bool(push.idempotent)
    return Push(**{**push.__dict__, "body": bytes(push.body), "idempotent": idempotent})


def _locked(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def call(self: PushStore, *args: Any, **kwargs: Any) -> T:
        with self._lock:
            return method(self, *args, **kwargs)

    return call


class PushStore:
    """The ledger of one challenge's pushes. Blocking calls: the pusher runs them off the event loop.

    Several processes may share the file (``serve`` and ``base-runner push
    once``): revisions are allocated inside an immediate transaction. Within
    one process a lock serializes the calls, so that :meth:`close` waits for
    a call still running in a worker thread after its task was cancelled.
    """

    def __init__(self, path: Path, slug: str) -> None:
        self.path = path
        self.slug = slug
        # Its folder is one of the data dir's (store_path); SQLite syncs the folder's entries, not the folder's own.
        durable.make_dirs(path.parent, path.parent.parent)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is fsync'd before it returns, so "stored" means on disk.
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(_SCHEMA)

    @_locked
    def close(self) -> None:
        """Close the file; the store is unusable afterwards."""
        self._conn.close()

    def _select(self, where: str, args: tuple[object, ...] = ()) -> list[Push]:
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM pushes WHERE slug = ? AND {where} ORDER BY epoch, revision",
            (self.slug, *args),
        )
        return [_push(row) for row in rows]

    @_locked
    def pending(self) -> Push | None:
        """The oldest request not answered for good, if any."""
        rows = self._select("state = 'pending'")
        return rows[0] if rows else None

    @_locked
    def latest(self, epoch: int) -> Push | None:
        """The highest revision stored for ``epoch``."""
        rows = self._select("epoch = ?", (epoch,))
        return rows[-1] if rows else None

    @_locked
    def sealed(self, epoch: int) -> bool:
        """Whether the master said ``epoch`` is sealed or stale."""
        return bool(self._select("epoch = ? AND state = 'sealed'", (epoch,)))

    @_locked
    def last_acknowledged(self) -> Push | None:
        """The most recent acknowledged request."""
        rows = self._select("state = 'acknowledged'")
        return rows[-1] if rows else None

    @_locked
    def recent(self, limit: int = 10) -> list[Push]:
        """The last ``limit`` requests, newest last."""
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM pushes WHERE slug = ? ORDER BY updated_at DESC, epoch DESC, revision DESC LIMIT ?",
            (self.slug, limit),
        )
        return [_push(row) for row in reversed(list(rows))]

    @_locked
    def add(
        self,
        *,
        epoch: int,
        nonce: str,
        body_for: Callable[[int], tuple[bytes, str]],
        weights_digest: str,
        expires_at: int,
    ) -> Push:
        """Store a new pending request for ``epoch`` under the next free revision, durably.

        ``body_for(revision)`` builds the body once the revision is known; it
        is called inside the transaction that claims the revision.
        """
        now = time.time()
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            (top,) = self._conn.execute(
                "SELECT COALESCE(MAX(revision), 0) FROM pushes WHERE slug = ? AND epoch = ?", (self.slug, epoch)
            ).fetchone()
            revision = int(top) + 1
            body, digest = body_for(revision)
            self._conn.execute(
                f"INSERT INTO pushes ({_COLUMNS}) VALUES ({', '.join('?' * len(Push.__dataclass_fields__))})",
                (
                    self.slug,
                    epoch,
                    revision,
                    nonce,
                    body,
                    digest,
                    weights_digest,
                    expires_at,
                    "pending",
                    None,
                    None,
                    0,
                    None,
                    None,
                    now,
                    now,
                ),
            )
            self._conn.execute("COMMIT")
        except BaseException:
            # SQLite has already rolled back after some faults, a full disk among them: a ROLLBACK
            # then fails, and its error would stand in for the one that says what happened.
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        stored = self.latest(epoch)
        assert stored is not None and stored.nonce == nonce
        return stored

    @_locked
    def attempted(self, push: Push, status: int | None, error: str | None) -> None:
        """Count one attempt that left ``push`` pending, with its status and error."""
        self._conn.execute(
            "UPDATE pushes SET attempts = attempts + 1, last_status = ?, last_error = ?, updated_at = ? "
            "WHERE slug = ? AND epoch = ? AND revision = ?",
            (status, error, time.time(), self.slug, push.epoch, push.revision),
        )

    @_locked
    def finish(
        self,
        push: Push,
        state: str,
        *,
        status: int | None = None,
        error: str | None = None,
        snapshot_id: str | None = None,
        idempotent: bool | None = None,
        attempt: bool = True,
    ) -> None:
        """Record the final ``state`` of ``push`` (one of :data:`FINAL_STATES`)."""
        assert state in FINAL_STATES, state
        self._conn.execute(
            "UPDATE pushes SET state = ?, attempts = attempts + ?, last_status = ?, last_error = ?, "
            "snapshot_id = ?, idempotent = ?, updated_at = ? WHERE slug = ? AND epoch = ? AND revision = ?",
            (
                state,
                1 if attempt else 0,
                status,
                error,
                snapshot_id,
                idempotent,
                time.time(),
                self.slug,
                push.epoch,
                push.revision,
            ),
        )
