"""Files on the data volume through `base_runner.storage`: paths stay inside, writes are atomic."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from base_runner import storage


@pytest.fixture
def data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    storage.configure(data)
    return data.resolve()


def test_path_is_under_the_data_dir(data: Path) -> None:
    assert storage.path("uploads", "a.tar.gz") == data / "uploads" / "a.tar.gz"
    assert storage.path("analyzer/out.json") == data / "analyzer" / "out.json"
    assert storage.root() == data


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        (("uploads", "../../etc/passwd"), "contains '..'"),
        (("..",), "contains '..'"),
        (("/etc/passwd",), "is absolute"),
        (("uploads", "a\x00b"), "contains a NUL byte"),
    ],
)
def test_paths_that_would_leave_are_refused(data: Path, parts: tuple[str, ...], message: str) -> None:
    with pytest.raises(storage.StorageError, match=message):
        storage.path(*parts)


def test_symlink_out_of_the_data_dir_is_refused(data: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (data / "link").symlink_to(outside)
    with pytest.raises(storage.StorageError, match="leads outside the data dir"):
        storage.path("link", "file")
    with pytest.raises(storage.StorageError):
        storage.write_bytes(data / "link" / "file", b"x")
    assert list(outside.iterdir()) == []


def test_symlink_inside_the_data_dir_is_fine(data: Path) -> None:
    (data / "real").mkdir()
    (data / "alias").symlink_to(data / "real")
    assert storage.write_text(storage.path("alias", "f.txt"), "hi").read_text() == "hi"


def test_absolute_path_outside_is_refused_on_write(data: Path, tmp_path: Path) -> None:
    with pytest.raises(storage.StorageError, match="is not inside the data dir"):
        storage.write_bytes(tmp_path / "elsewhere.bin", b"x")
    assert not (tmp_path / "elsewhere.bin").exists()


def test_write_creates_folders_and_replaces_whole(data: Path) -> None:
    target = storage.write_bytes(storage.path("artifacts", "run-1", "model.bin"), b"v1")
    assert target.read_bytes() == b"v1"
    storage.write_bytes("artifacts/run-1/model.bin", b"version two")
    assert target.read_bytes() == b"version two"
    assert sorted(os.listdir(target.parent)) == ["model.bin"], "no temporary file is left behind"


def test_a_failed_stream_leaves_the_old_file(data: Path) -> None:
    target = storage.write_text("uploads/report.txt", "complete")
    with pytest.raises(RuntimeError), storage.atomic_writer(target, "w") as handle:
        handle.write("half of a new ver")
        raise RuntimeError("client went away")
    assert target.read_text() == "complete"
    assert sorted(os.listdir(target.parent)) == ["report.txt"]


def test_not_configured_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "_root", None)
    with pytest.raises(RuntimeError, match="not configured"):
        storage.path("x")


def test_path_with_no_argument_is_the_data_dir(data: Path) -> None:
    assert storage.path() == data == storage.root()


def test_the_async_writes_leave_the_event_loop_free(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import threading

    real_fsync = os.fsync
    fsync_threads: set[int] = set()

    def slow_fsync(fd: int) -> None:
        # A busy volume: each fsync takes a while. On the loop's thread, the ticker below would stop.
        fsync_threads.add(threading.get_ident())
        time.sleep(0.05)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)

    async def scenario() -> tuple[int, Path, Path]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.005)

        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = ticks
        written = await storage.write_bytes_async(storage.path("uploads", "a.bin"), b"payload")
        text = await storage.write_text_async("notes/b.txt", "héllo")
        during = ticks - before
        stop.set()
        await ticking
        return during, written, text

    during, written, text = asyncio.run(scenario())
    assert written == data / "uploads" / "a.bin" and written.read_bytes() == b"payload"
    assert text.read_text(encoding="utf-8") == "héllo"
    assert fsync_threads and threading.get_ident() not in fsync_threads, "an fsync ran on the event loop's thread"
    # At least four fsyncs of 50 ms each (files and new folders): the loop turned all along.
    assert during >= 10, during


def test_the_async_writer_streams_and_a_failure_leaves_the_old_file(data: Path) -> None:
    import asyncio

    async def stream(fail: bool) -> None:
        async with storage.atomic_writer_async(storage.path("uploads", "c.bin")) as out:
            for chunk in (b"one ", b"two ", b"three"):
                await out.write(chunk)
            if fail:
                raise RuntimeError("the client went away")

    asyncio.run(stream(fail=False))
    assert (data / "uploads" / "c.bin").read_bytes() == b"one two three"
    with pytest.raises(RuntimeError, match="went away"):
        asyncio.run(stream(fail=True))
    assert (data / "uploads" / "c.bin").read_bytes() == b"one two three"
    assert sorted(p.name for p in (data / "uploads").iterdir()) == ["c.bin"]
