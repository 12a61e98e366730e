"""Files on the data volume: artifacts, analyzer output, uploads.

Every path is checked to stay inside the data dir: ``..``, absolute paths,
NUL bytes and symlinks that lead out are refused. Writes are atomic and
durable (a temporary file in the same folder, fsync, rename, fsync of the
folder and of every folder created for it): a crash leaves either the old
file or the new one, never half of one, and a power cut after the write
returned loses nothing::

    from base_runner import storage

    target = storage.path("uploads", f"{submission_id}.tar.gz")
    storage.write_bytes(target, payload)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

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

    Nothing is created. Raises :class:`StorageError` naming the fault.
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
