"""Files on the data volume through `base_runner.storage`: paths stay inside, writes are atomic."""

from __future__ import annotations

import os
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
