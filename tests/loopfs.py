"""Small real filesystems for disk-fault tests: an ext4 image on a loop device, mounted in a temp dir.

Needs root (as in CI); the tests that use it skip elsewhere. Everything is
unmounted and detached in ``finally``, also when the test fails.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class LoopFs:
    """A mounted loop filesystem."""

    device: str
    mount: Path

    def trigger_error(self) -> None:
        """Make ext4 record an error, as a failing disk does; with ``errors=remount-ro`` it turns read-only."""
        Path(f"/sys/fs/ext4/{Path(self.device).name}/trigger_fs_error").write_text("disk-fault test\n")

    def remount(self) -> None:
        """Unmount and mount again: what reached the disk, and only that, is there."""
        subprocess.run(["umount", str(self.mount)], check=True)
        subprocess.run(["mount", self.device, str(self.mount)], check=True)

    def fill(self) -> None:
        """Fill the filesystem to the last byte with one file, ``filler``."""
        subprocess.run(
            ["dd", "if=/dev/zero", f"of={self.mount / 'filler'}", "bs=64k"], capture_output=True, check=False
        )
        os.sync()


def require_root() -> None:
    if os.geteuid() != 0 or not Path("/dev/loop-control").exists():
        pytest.skip("loop-mounted filesystems need root and loop devices")


@contextmanager
def loop_fs(tmp_path: Path, megabytes: int, options: str = "") -> Iterator[LoopFs]:
    """A fresh ext4 of ``megabytes`` with no reserved blocks, mounted with ``options``."""
    require_root()
    image = tmp_path / "disk.img"
    mount = tmp_path / "mnt"
    mount.mkdir()
    with image.open("wb") as out:
        out.truncate(megabytes * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True, capture_output=True)
    device = subprocess.run(
        ["losetup", "-f", "--show", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        mount_options = ["-o", options] if options else []
        subprocess.run(["mount", *mount_options, device, str(mount)], check=True)
        try:
            yield LoopFs(device, mount)
        finally:
            subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)
    finally:
        subprocess.run(["losetup", "-d", device], check=False, capture_output=True)
        image.unlink(missing_ok=True)
