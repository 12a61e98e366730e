"""The forgetful filesystem keeps what its model says, and only that: the power-cut tests mean what they say.

Each test does to a real FUSE mount what a program does (``os`` calls), cuts
the power, and looks at what survived (the model: tests/forgetfs.py).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from forgetfs import ForgetfulFs, forgetful_fs, unavailable

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=unavailable() or "")


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[ForgetfulFs]:
    with forgetful_fs(tmp_path) as mounted:
        yield mounted


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write(path: Path, data: bytes, *, sync: bool) -> None:
    with path.open("ab") as handle:
        handle.write(data)
        handle.flush()
        if sync:
            os.fsync(handle.fileno())


def test_a_synced_write_is_kept_and_an_unsynced_one_lost(fs: ForgetfulFs) -> None:
    target = fs.mount / "file"
    write(target, b"kept", sync=True)
    fsync(fs.mount)
    write(target, b" lost", sync=False)
    assert target.read_bytes() == b"kept lost", "a process sees what it wrote before the cut"
    fs.cut()
    assert target.read_bytes() == b"kept"


def test_fdatasync_makes_content_durable_too(fs: ForgetfulFs) -> None:
    target = fs.mount / "file"
    with target.open("wb") as handle:
        handle.write(b"data")
        handle.flush()
        os.fdatasync(handle.fileno())
    fsync(fs.mount)
    fs.cut()
    assert target.read_bytes() == b"data"


def test_a_new_file_is_lost_until_its_folder_is_synced(fs: ForgetfulFs) -> None:
    write(fs.mount / "unsynced-entry", b"synced content", sync=True)
    fs.cut()
    assert not (fs.mount / "unsynced-entry").exists()
    write(fs.mount / "synced-entry", b"", sync=False)
    fsync(fs.mount)
    fs.cut()
    assert (fs.mount / "synced-entry").exists(), "a durable entry whose content never was comes back empty"
    assert (fs.mount / "synced-entry").read_bytes() == b""


def test_a_file_in_a_new_folder_is_lost_until_the_parent_is_synced(fs: ForgetfulFs) -> None:
    folder = fs.mount / "uploads"
    folder.mkdir()
    write(folder / "a", b"payload", sync=True)
    fsync(folder)
    fs.cut()
    assert not folder.exists(), "the folder's own entry lives in the parent, which was never synced"
    folder.mkdir()
    write(folder / "a", b"payload", sync=True)
    fsync(folder)
    fsync(fs.mount)
    fs.cut()
    assert (folder / "a").read_bytes() == b"payload"


def test_a_rename_is_not_durable_until_the_folder_is_synced(fs: ForgetfulFs) -> None:
    write(fs.mount / "old", b"v1", sync=True)
    fsync(fs.mount)
    write(fs.mount / "tmp", b"v2", sync=True)
    os.replace(fs.mount / "tmp", fs.mount / "old")
    assert (fs.mount / "old").read_bytes() == b"v2"
    fs.cut()
    assert (fs.mount / "old").read_bytes() == b"v1", "the replaced file is back"
    assert not (fs.mount / "tmp").exists()
    write(fs.mount / "tmp", b"v2", sync=True)
    os.replace(fs.mount / "tmp", fs.mount / "old")
    fsync(fs.mount)
    fs.cut()
    assert (fs.mount / "old").read_bytes() == b"v2"
    assert sorted(os.listdir(fs.mount)) == ["old"]


def test_an_unlink_and_a_truncate_come_back_unless_synced(fs: ForgetfulFs) -> None:
    write(fs.mount / "gone", b"x", sync=True)
    write(fs.mount / "short", b"0123456789", sync=True)
    fsync(fs.mount)
    (fs.mount / "gone").unlink()
    os.truncate(fs.mount / "short", 2)
    fs.cut()
    assert (fs.mount / "gone").read_bytes() == b"x"
    assert (fs.mount / "short").read_bytes() == b"0123456789"


def test_sqlite_full_keeps_what_it_committed_and_normal_does_not(fs: ForgetfulFs) -> None:
    """SQLite's own fsyncs are enough on this model under FULL (the database holds), and too few under NORMAL."""
    counts = {}
    for synchronous in ("FULL", "NORMAL"):
        database = fs.mount / f"{synchronous}.sqlite3"
        # A process that commits 20 rows and is killed holding the database open, as a power cut finds it.
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(database), synchronous], stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout is not None and writer.stdout.readline() == "committed\n"
        writer.kill()
        writer.wait()
        fs.cut()
        conn = sqlite3.connect(database)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            counts[synchronous] = conn.execute("SELECT count(*) FROM t").fetchone()[0]
        finally:
            conn.close()
    assert counts["FULL"] == 20
    assert counts["NORMAL"] < 20


WRITER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA synchronous=FULL")
conn.execute("CREATE TABLE t (n INTEGER)")
conn.execute("PRAGMA synchronous=" + sys.argv[2])
for n in range(20):
    conn.execute("INSERT INTO t VALUES (?)", (n,))
print("committed", flush=True)
time.sleep(60)
"""
