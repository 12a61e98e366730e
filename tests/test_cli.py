"""The command line's own surface: version, help, and computing weights once."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import conftest
import pytest
from conftest import clean_env, log_records, run_cli

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


def imported_modules(stderr: str) -> set[str]:
    """Top-level packages a process imported, from its ``PYTHONPROFILEIMPORTTIME`` report."""
    return {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }


@pytest.mark.parametrize("command", [["--help"], ["--version"], ["plugins"], ["plugins", "--json"], ["db", "--help"]])
def test_light_commands_import_neither_fastapi_nor_sqlalchemy(command: list[str], sites: dict[str, Path]) -> None:
    # The real command, with a challenge installed: its probe runs in a child process, which
    # imports what the challenge needs; the command itself stays light (a start in ~0.1 s).
    result = run_cli(*command, sites=[sites["example"]], PYTHONPROFILEIMPORTTIME="1")
    assert result.returncode == 0, result.stderr
    imported = imported_modules(result.stderr)
    assert "click" in imported, "no import report: the test would prove nothing"
    assert imported.isdisjoint({"fastapi", "sqlalchemy", "pydantic", "starlette", "uvicorn", "aiosqlite"}), imported
    if command[0] == "plugins":
        assert "example" in result.stdout and "BROKEN" not in result.stdout


def test_weights_prints_the_body_the_master_gets(sites: dict[str, Path], tmp_path: Path) -> None:
    assert run_cli("weights", "--data-dir", str(tmp_path), sites=[sites["example"]]).returncode == 0
    with sqlite3.connect(tmp_path / "challenge.sqlite3") as conn:
        conn.executemany("INSERT INTO submissions (hotkey, score) VALUES (?, ?)", [("5A", 1), ("5A", 8), ("5B", 2)])
    result = run_cli("weights", "--data-dir", str(tmp_path), sites=[sites["example"]])
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["weights"] == {"5A": 8.0, "5B": 2.0}
    assert body["challenge_slug"] == "example" and body["metadata"]["dropped"] == "0"


def test_weights_reports_dropped_entries_on_stderr(sites: dict[str, Path], tmp_path: Path) -> None:
    # The example's route refuses negative scores, so write one behind its back.
    assert run_cli("weights", "--data-dir", str(tmp_path), sites=[sites["example"]]).returncode == 0
    with sqlite3.connect(tmp_path / "challenge.sqlite3") as conn:
        conn.executemany("INSERT INTO submissions (hotkey, score) VALUES (?, ?)", [("5A", 1), ("5Neg", -4)])
    result = run_cli("weights", "--data-dir", str(tmp_path), sites=[sites["example"]])
    assert result.returncode == 1, "an entry the master will not get is a failure"
    assert json.loads(result.stdout)["weights"] == {"5A": 1.0}
    assert "dropped weight for hotkey '5Neg': value is negative" in result.stderr
    assert "dropped 1 invalid entry (see the warnings above)" in result.stderr
    allowed = run_cli("weights", "--allow-dropped", "--data-dir", str(tmp_path), sites=[sites["example"]])
    assert allowed.returncode == 0
    assert json.loads(allowed.stdout)["weights"] == {"5A": 1.0} and "dropped 1 invalid entry" in allowed.stderr


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


def test_a_reader_that_goes_away_ends_the_output_quietly(sites: dict[str, Path]) -> None:
    # base-runner check | head -1
    proc = subprocess.Popen(
        [conftest.BASE_RUNNER, "check", "--challenge", "example"],
        env=clean_env([sites["example"]]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"PASS load")
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


def test_debug_leaves_out_the_drivers_lines(sites: dict[str, Path], tmp_path: Path) -> None:
    result = run_cli("weights", "--debug", "--data-dir", str(tmp_path), sites=[sites["example"]])
    assert result.returncode == 0, result.stderr
    records = [r for r in log_records(result.stderr) if isinstance(r, dict)]
    assert any(r["level"] == "DEBUG" for r in records), result.stderr  # the level is on: the test proves something
    assert [r for r in records if r["logger"].split(".")[0] == "aiosqlite"] == []


def test_a_mistyped_challenge_setting_is_named(sites: dict[str, Path], tmp_path: Path) -> None:
    result = run_cli(
        "weights", "--challenge", "sdk", "--data-dir", str(tmp_path), sites=[sites["testbed"]], CHALLENGE_ROUNDZ="5"
    )
    assert result.returncode == 0, result.stderr
    assert (
        "CHALLENGE_ROUNDZ is set but neither SdkSettings nor the runner reads it; did you mean CHALLENGE_ROUNDS?"
    ) in result.stderr
    spelled = run_cli(
        "weights", "--challenge", "sdk", "--data-dir", str(tmp_path), sites=[sites["testbed"]], CHALLENGE_ROUNDS="5"
    )
    assert "is set but neither" not in spelled.stderr
