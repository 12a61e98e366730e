"""Files on the data volume: artifacts, analyzer output, uploads.

Every path is checked to stay inside the data dir: ``..``, absolute paths,
NUL bytes and symlinks that lead out are refused. Writes are atomic and
durable (a temporary file in the same folder, fsync, rename, fsync of the
folder and of every folder created for it): a crash leaves either the old
file or the new one, never half of one, and a power cut after the write
returned loses nothing::

    from base_runner import storage

    target = storage.path("uploads", f"{submission_id}.tar.gz")
    await storage.write_bytes_async(target, payload)   # in an async def route or worker

What blocks: :func:`write_bytes`, :func:`write_text` and :func:`atomic_writer`
wait on the disk (each fsyncs the file and its folders, milliseconds to
seconds on a busy volume), so in ``async def`` code use their ``_async``
twins, which do the same work in a worker thread and leave the event loop
free. :func:`path` and :func:`root` only compute a path (``path()`` with no
argument is the data dir itself) and never block on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any

from ._storage import durable

_root: Path | None = None


class StorageError(ValueError):
    """A path that would leave the data dir, or is not a valid path at all."""


def configure(data_dir: Path) -> None:
    """Point storage at the data dir; the runner does this at startup."""
    global _root
    _root = Path(data_dir).resolve()


def root() -> Path:
    """The data dir."""
    if _root is None:
        raise RuntimeError("base_runner.storage is not configured: the runner configures it at startup")
    return _root


def path(*parts: str | os.PathLike[str]) -> Path:
    """The path of ``parts`` under the data dir, refused if it would lead outside it.

    ``path()`` with no argument is the data dir itself. Nothing is created
    and nothing waits on the disk. Raises :class:`StorageError` naming the fault.
    """
    base = root()
    for part in parts:
        text = os.fspath(part)
        if "\x00" in text:
            raise StorageError(f"path part {text!r} contains a NUL byte")
        if os.path.isabs(text):
            raise StorageError(f"path part {text!r} is absolute; give a path relative to the data dir")
        if ".." in Path(text).parts:
            raise StorageError(f"path part {text!r} contains '..'")
    target = base.joinpath(*parts)
    # resolve() follows every symlink that exists, so a link pointing out shows here.
    if not target.resolve().is_relative_to(base):
        raise StorageError(f"{target} leads outside the data dir {base} through a symlink")
    return target


def _inside(target: str | os.PathLike[str]) -> Path:
    candidate = Path(target)
    if candidate.is_absolute():
        try:
            candidate = candidate.relative_to(root())
        except ValueError:
            raise StorageError(f"{target} is not inside the data dir {root()}") from None
    return path(candidate)


@contextlib.contextmanager
def atomic_writer(target: str | os.PathLike[str], mode: str = "wb", **open_args: object) -> Iterator[IO]:
    """Open a temporary file beside ``target``; on a clean exit it replaces ``target``.

    For streaming writes (uploads). On an exception the temporary file is
    removed and ``target`` is left as it was. Missing folders are created;
    once the block exits, the file and its folders are on disk.

    :param target: a path from :func:`path`, or relative to the data dir.
    :param mode: ``"wb"`` or ``"w"``.
    """
    with durable.atomic_writer(_inside(target), root(), mode, **open_args) as handle:
        yield handle


def write_bytes(target: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically; return the final path."""
    with atomic_writer(target, "wb") as handle:
        handle.write(data)
    return _inside(target)


def write_text(target: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``target`` atomically; return the final path."""
    return write_bytes(target, text.encode(encoding))


async def write_bytes_async(target: str | os.PathLike[str], data: bytes) -> Path:
    """:func:`write_bytes` in a worker thread, for ``async def`` code: the event loop does not wait on the disk."""
    return await asyncio.to_thread(write_bytes, target, data)


async def write_text_async(target: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """:func:`write_text` in a worker thread, for ``async def`` code."""
    return await asyncio.to_thread(write_text, target, text, encoding)


class AsyncFile:
    """The file of :func:`atomic_writer_async`: each ``await write(data)`` runs in a worker thread."""

    def __init__(self, handle: IO[Any]) -> None:
        self._handle = handle

    async def write(self, data: bytes | str) -> int:
        return await asyncio.to_thread(self._handle.write, data)


@contextlib.asynccontextmanager
async def atomic_writer_async(
    target: str | os.PathLike[str], mode: str = "wb", **open_args: object
) -> AsyncIterator[AsyncFile]:
    """:func:`atomic_writer` for ``async def`` code: opening, each write, and the fsyncs and rename run in threads.

    ::

        async with storage.atomic_writer_async(storage.path("uploads", name)) as out:
            async for chunk in request.stream():
                await out.write(chunk)
    """
    writer = atomic_writer(target, mode, **open_args)
    handle = await asyncio.to_thread(writer.__enter__)
    try:
        yield AsyncFile(handle)
    except BaseException as exc:
        # The temporary file is removed and target left as it was; the exception goes on.
        await asyncio.to_thread(writer.__exit__, type(exc), exc, exc.__traceback__)
        raise
    await asyncio.to_thread(writer.__exit__, None, None, None)
