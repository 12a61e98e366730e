"""The command line's own surface: version, help, and computing weights once."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import run_cli

from base_runner import __version__


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"base-runner, version {__version__}"


@pytest.mark.parametrize("command", [[], ["serve"], ["plugins"], ["weights"], ["new"], ["check"]])
def test_help_on_every_command(command: list[str]) -> None:
    result = run_cli(*command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: base-runner")


def test_weights_prints_the_body_the_master_gets(sites: dict[str, Path], tmp_path: Path) -> None:
    assert run_cli("weights", "--data-dir", str(tmp_path), sites=[sites["example"]]).returncode == 0
    with sqlite3.connect(tmp_path / "challenge.sqlite3") as conn:
        conn.executemany("INSERT INTO submissions (hotkey, score) VALUES (?, ?)", [("5A", 1), ("5A", 8), ("5B", 2)])
    result = run_cli("weights", "--data-dir", str(tmp_path), sites=[sites["example"]])
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["weights"] == {"5A": 8.0, "5B": 2.0}
    assert body["challenge_slug"] == "example" and body["metadata"]["dropped"] == 0


def test_weights_reports_dropped_entries_on_stderr(sites: dict[str, Path], tmp_path: Path) -> None:
    # The example's route refuses negative scores, so write one behind its back.
    assert run_cli("weights", "--data-dir", str(tmp_path), sites=[sites["example"]]).returncode == 0
    with sqlite3.connect(tmp_path / "challenge.sqlite3") as conn:
        conn.executemany("INSERT INTO submissions (hotkey, score) VALUES (?, ?)", [("5A", 1), ("5Neg", -4)])
    result = run_cli("weights", "--data-dir", str(tmp_path), sites=[sites["example"]])
    assert result.returncode == 0
    assert json.loads(result.stdout)["weights"] == {"5A": 1.0}
    assert "dropped weight for hotkey '5Neg': value is negative" in result.stderr
    assert "dropped 1 invalid entries" in result.stderr


def test_weights_failure_is_one_line_and_non_zero(sites: dict[str, Path], tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "challenge.sqlite3") as conn:
        # A table of the right name but the wrong shape makes the example's query fail.
        conn.execute("CREATE TABLE submissions (id INTEGER PRIMARY KEY)")
    result = run_cli("weights", "--data-dir", str(tmp_path), sites=[sites["example"]])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "base-runner: error: challenge example: get_weights raised OperationalError: "
        "(sqlite3.OperationalError) no such column: submissions.hotkey"
    )
    assert "Traceback" not in result.stderr
