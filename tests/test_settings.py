"""Settings, the data dir and the environment challenge code is left with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

CONTROL_PLANE = {
    "BASE_DATABASE_URL": "postgresql://master:hunter2@db:5432/base",
    "PLATFORM_DATABASE_URL": "postgresql://master:hunter2@db:5432/platform",
    "PGPASSWORD": "hunter2",
    "MASTER_DSN": "postgresql+asyncpg://master:hunter2@db/base",
    "CHALLENGE_SHARED_TOKEN": "s3cret-token",
}


def test_control_plane_credentials_never_reach_challenge_code(sites: dict[str, Path], tmp_path: Path) -> None:
    result = run_cli(
        "weights", "--challenge", "envspy", "--data-dir", str(tmp_path), sites=[sites["testbed"]], **CONTROL_PLANE
    )
    assert result.returncode == 0, result.stderr
    # envspy's get_weights names every watched variable its module saw at import.
    assert json.loads(result.stdout)["weights"] == {"clean": 1.0}
    assert "hunter2" not in result.stderr and "s3cret" not in result.stderr


def test_control_plane_credentials_are_gone_at_request_time(sites: dict[str, Path], tmp_path: Path, server) -> None:
    served = server(["--challenge", "envspy", "--data-dir", str(tmp_path)], [sites["testbed"]], **CONTROL_PLANE)
    with served.client() as client:
        assert client.get("/env").json() == {"at_import": [], "at_request": []}
    served.stop()
    assert "hunter2" not in served.output() and "s3cret" not in served.output()


def test_missing_data_dir_says_what_to_do(sites: dict[str, Path], tmp_path: Path) -> None:
    result = run_cli("serve", "--data-dir", str(tmp_path / "nowhere"), sites=[sites["example"]])
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"base-runner: error: data dir {tmp_path / 'nowhere'} does not exist: create it, or pass --data-dir "
        "(for example --data-dir ./data) or set CHALLENGE_DATA_DIR"
    )


def test_data_dir_that_is_a_file(sites: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = run_cli("serve", "--data-dir", str(tmp_path / "file"), sites=[sites["example"]])
    assert result.returncode == 2
    assert "is not a folder" in result.stderr


def test_default_data_dir_comes_from_the_environment(sites: dict[str, Path], tmp_path: Path) -> None:
    result = run_cli("weights", sites=[sites["example"]], CHALLENGE_DATA_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "challenge.sqlite3").is_file()
    assert (tmp_path / "tmp").is_dir()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql+asyncpg://master:hunter2@db/base",
            "must be a sqlite+aiosqlite:// URL, got a postgresql+asyncpg:// one",
        ),
        ("sqlite:////data/x.sqlite3", "got a sqlite:// one"),
        ("sqlite+aiosqlite://", "must name a database file"),
        ("sqlite+aiosqlite:///:memory:", "must name a database file"),
        ("not a url", "is not a URL"),
    ],
)
def test_database_url_must_be_an_aiosqlite_file(
    sites: dict[str, Path], tmp_path: Path, url: str, expected: str
) -> None:
    result = run_cli("weights", "--data-dir", str(tmp_path), sites=[sites["example"]], CHALLENGE_DATABASE_URL=url)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "hunter2" not in result.stderr


def test_database_url_picks_the_file(sites: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.sqlite3"
    result = run_cli(
        "weights",
        "--data-dir",
        str(tmp_path),
        sites=[sites["example"]],
        CHALLENGE_DATABASE_URL=f"sqlite+aiosqlite:///{target}",
    )
    assert result.returncode == 0, result.stderr
    assert target.is_file() and not (tmp_path / "challenge.sqlite3").exists()


def test_bad_setting_is_one_line(sites: dict[str, Path], tmp_path: Path) -> None:
    result = run_cli("serve", "--data-dir", str(tmp_path), sites=[sites["example"]], CHALLENGE_PORT="eighty")
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "base-runner: error: CHALLENGE_PORT: Input should be a valid integer, unable to parse string as an integer"
    )
