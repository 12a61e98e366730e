"""Files on the data volume: artifacts, analyzer output, uploads.

Every path is checked to stay inside the data dir: ``..``, absolute paths,
NUL bytes and symlinks that lead out are refused. Writes are atomic (a
temporary file in the same folder, fsync, rename), so a crash leaves either
the old file or the new one, never half of one::

    from base_runner import storage

    target = storage.path("uploads", f"{submission_id}.tar.gz")
    storage.write_bytes(target, payload)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

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
    removed and ``target`` is left as it was. Parent folders are created.

    :param target: a path from :func:`path`, or relative to the data dir.
    :param mode: ``"wb"`` or ``"w"``.
    """
    final = _inside(target)
    final.parent.mkdir(parents=True, exist_ok=True)
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
    # The rename is durable only once the folder itself is on disk.
    folder = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def write_bytes(target: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically; return the final path."""
    with atomic_writer(target, "wb") as handle:
        handle.write(data)
    return _inside(target)


def write_text(target: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``target`` atomically; return the final path."""
    return write_bytes(target, text.encode(encoding))
