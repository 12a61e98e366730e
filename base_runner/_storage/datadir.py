"""The runner's hold on its data dir: one process at a time, for the life of the process.

Two runners on one SQLite file both write, and two writers from two processes
are what SQLite's WAL-reset bug needs. ``serve`` and ``db init`` take an
exclusive ``flock`` on ``<data dir>/.base-runner.lock`` and keep it until they
exit (the kernel drops it when the process dies, however it dies). A Swarm
rolling update may start the new task before the old one has stopped, so a
second runner waits a bounded time for the lock before it gives up.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from pathlib import Path

from .._core.errors import ConfigError
from . import durable

log = logging.getLogger("base_runner")

LOCK_FILE = ".base-runner.lock"
_POLL = 0.1


class DataDirLock:
    """An exclusive lock on a data dir, naming its holder (pid and host) in the lock file."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def holder(self) -> str:
        """Who holds the lock, as its holder wrote it: ``pid N on HOST``."""
        try:
            return self.path.read_text().strip() or "a process that has not written its pid yet"
        except OSError:
            return "an unknown process"

    def acquire(self, wait: float) -> None:
        """Take the lock, waiting up to ``wait`` seconds; raise :class:`ConfigError` (exit 2) naming the holder."""
        fd = durable.open_file(self.path, self.data_dir)
        deadline = time.monotonic() + wait
        waiting = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise ConfigError(
                        f"data dir {self.data_dir} is in use by another runner ({self.holder()}); "
                        f"waited {wait:g}s for it to stop (CHALLENGE_LOCK_WAIT). Two runners must never "
                        "share one database: stop the other one"
                    ) from None
                if not waiting:
                    log.info(
                        "data dir %s is in use by another runner (%s); waiting up to %gs for it to stop",
                        self.data_dir,
                        self.holder(),
                        wait,
                    )
                    waiting = True
                time.sleep(_POLL)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        except OSError as exc:
            # Who holds the lock is for the operator's eyes; the lock holds without it. A full volume is
            # reported next, by the database's free-space check, with what to do.
            log.warning("cannot write the lock holder into %s: %s", self.path, exc.strerror)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up; exiting the process does the same."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
