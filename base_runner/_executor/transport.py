"""Mounts as BASE's broker carries them: gzip tar archives in the request, writable ones back in stdout.

The request's archive is the template's (``executors/docker.py`` ``_encode_mount``);
the sections in stdout are those of BASE's ``mount_transport`` (the broker's
bootstrap prints each writable mount between two sentinels). Links, devices and
FIFOs are left out of an archive: the broker refuses an archive holding one, and
reading a link's target could put a file from outside the data dir in it.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import tarfile
from pathlib import Path
from typing import Any

from .policy import CheckedMount

_SECTION = re.compile(
    # The bootstrap ends each sentinel with a newline: the one after END goes with its section.
    r"@@BASE_BROKER_MOUNT_OUT\[(\d+)\]:BEGIN@@(.*?)@@BASE_BROKER_MOUNT_OUT\[\1\]:END@@\n?",
    re.DOTALL,
)
_NOT_REGULAR = ("issym", "islnk", "isdev", "ischr", "isblk", "isfifo")


def _regular(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if any(getattr(info, check)() for check in _NOT_REGULAR) else info


def encode_mount(mount: CheckedMount) -> dict[str, Any]:
    """The broker's ``BrokerMount``: the source as a base64 gzip tar, with how to unpack it."""
    stream = io.BytesIO()
    directory = mount.source.is_dir()
    name = "." if directory else mount.source.name
    with tarfile.open(fileobj=stream, mode="w:gz") as tar:
        tar.add(mount.source, arcname=name, filter=_regular)
    return {
        "target": mount.target,
        "read_only": mount.read_only,
        "source_type": "directory" if directory else "file",
        "source_name": name,
        "archive_b64": base64.b64encode(stream.getvalue()).decode("ascii"),
    }


def drained(stdout: str) -> tuple[dict[int, bytes], str]:
    """The writable mounts' archives found in ``stdout``, by mount index, and ``stdout`` without them.

    A section whose base64 does not decode is dropped, as BASE's own parser drops it.
    """
    archives: dict[int, bytes] = {}
    for match in _SECTION.finditer(stdout):
        blob = "".join(match.group(2).split())
        try:
            archives[int(match.group(1))] = base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError):
            continue
    return archives, _SECTION.sub("", stdout)


def restore(archive: bytes, folder: Path) -> None:
    """Unpack a drained archive into ``folder`` with tarfile's ``data`` filter: nothing lands outside it."""
    if not archive:
        return
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        tar.extractall(folder, filter="data")
