"""What the runner writes survives a power cut: every file and folder it creates goes through here.

A file's content is on disk once the file is fsynced; its name in a folder
(and a rename or an unlink there) once that folder is fsynced; a new
folder's name once its *parent* is. ext4 and XFS usually commit a new
folder with some later fsync, so skipping one mostly works on a laptop;
POSIX does not promise it, and an acknowledgement must not hang on luck
(``docs/operating.md``, "What is on disk when a write is acknowledged").

Every helper takes the ``root`` it may create folders under, the data dir:
folders are created and made durable from there down, the root's own entry
is the operator's (a mounted volume). Blocking calls: from ``async`` code run
them in a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

# Folders this process made durable in their parent, by (path, device, inode): one fsync of the
# parent per folder and process, not per write. The inode tells a folder removed and created again.
_durable_folders: set[tuple[Path, int, int]] = set()


def sync_folder(folder: Path) -> None:
    """fsync ``folder``: the names it holds now are on disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(folder: Path, root: Path) -> Path:
    """Create ``folder`` and every missing folder from ``root`` down to it, each one durable in its parent.

    A folder that already exists is made durable too, once per process: a
    killed process may have created it and never synced its parent.
    Raises :class:`ValueError` when ``folder`` is not under ``root``.
    """
    current = Path(root)
    for part in Path(folder).relative_to(root).parts:
        parent, current = current, current / part
        with contextlib.suppress(FileExistsError):
            current.mkdir()
        found = os.stat(current)
        key = (current, found.st_dev, found.st_ino)
        if key not in _durable_folders:
            sync_folder(parent)
            _durable_folders.add(key)
    return Path(folder)


def sync(path: Path, root: Path) -> None:
    """Make ``path`` (a file or folder written by other means) durable: its content, its name, its folders."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    make_dirs(path.parent, root)
    sync_folder(path.parent)


def sync_tree(folder: Path, root: Path) -> None:
    """Make what another process wrote under ``folder`` (a container, through a mount) durable, and ``folder``.

    Every regular file is fsynced and every folder, each one's entries with
    it; links are not followed. Then ``folder`` itself is made durable in its
    parents up to ``root``.
    """
    for current, _folders, files in os.walk(folder):
        for name in files:
            try:
                fd = os.open(os.path.join(current, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue  # a link, or gone: nothing of it to keep
            try:
                if stat.S_ISREG(os.fstat(fd).st_mode):
                    os.fsync(fd)
            finally:
                os.close(fd)
        sync_folder(Path(current))
    make_dirs(folder, root)


def open_file(path: Path, root: Path, flags: int = os.O_RDWR, mode: int = 0o644) -> int:
    """``os.open`` with ``O_CREAT``: the file, if it is created, and its folders are durable before it returns."""
    make_dirs(path.parent, root)
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        fd = os.open(path, flags | os.O_CREAT, mode)
    try:
        # Also when the file existed: a killed process may have created it and never synced its folder.
        sync_folder(path.parent)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def atomic_writer(target: Path, root: Path, mode: str = "wb", **open_args: object) -> Iterator[IO]:
    """Open a temporary file beside ``target``; on a clean exit it durably replaces ``target``.

    The temporary file is fsynced, renamed over ``target``, and the folder
    fsynced, its missing folders created durably first: once the block has
    exited, ``target`` holds the new content through a power cut; after a
    crash it holds the old content or the new, never a part. On an exception
    the temporary file is removed and ``target`` is left as it was.

    :param mode: ``"wb"`` or ``"w"``.
    """
    final = Path(target)
    make_dirs(final.parent, root)
    fd, temporary = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, mode, **open_args) as handle:  # type: ignore[call-overload]
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    sync_folder(final.parent)


def write_atomic(target: Path, data: bytes, root: Path) -> None:
    """Durably replace ``target``'s content with ``data`` (:func:`atomic_writer`)."""
    with atomic_writer(target, root) as handle:
        handle.write(data)
