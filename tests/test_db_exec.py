"""``base-runner db exec``: the fix ``db check`` prints, applied with a backup, never beside a server."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from conftest import run_cli
from test_schema import old_database

FIX = "ALTER TABLE submissions ADD COLUMN score INTEGER NOT NULL DEFAULT 0"


def _columns(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[1] for row in conn.execute("PRAGMA table_info(submissions)")]


def test_the_printed_fix_applied_with_a_backup_first(sites: dict[str, Path], tmp_path: Path) -> None:
    path = old_database(tmp_path, "id INTEGER PRIMARY KEY, hotkey VARCHAR(128)")
    assert run_cli("db", "check", "--data-dir", str(tmp_path), sites=[sites["example"]]).returncode == 1
    result = run_cli("db", "exec", "--data-dir", str(tmp_path), FIX, sites=[])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"backup: {tmp_path / 'backups' / 'challenge.sqlite3.'}")
    assert lines[1] == f"ran: {FIX} (0 rows changed)"
    assert _columns(path) == ["id", "hotkey", "score"]
    (backup,) = (tmp_path / "backups").iterdir()
    assert _columns(backup) == ["id", "hotkey"], "the backup is the database before the fix"
    with sqlite3.connect(backup) as conn:
        assert conn.execute("SELECT hotkey FROM submissions").fetchall() == [("5Old",)]
    # Only the missing index remains, a note: the drift that blocked /ready is gone.
    check = run_cli("db", "check", "--data-dir", str(tmp_path), sites=[sites["example"]])
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_dry_run_writes_nothing(tmp_path: Path) -> None:
    path = old_database(tmp_path, "id INTEGER PRIMARY KEY, hotkey VARCHAR(128)")
    update = "UPDATE submissions SET hotkey = '5New'"
    result = run_cli("db", "exec", "--dry-run", "--data-dir", str(tmp_path), FIX, update, sites=[])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"would run: {FIX} (0 rows changed)",
        f"would run: {update} (1 row changed)",
        "dry run: every statement ran, and all of it was rolled back; nothing was written",
    ]
    assert _columns(path) == ["id", "hotkey"]
    assert not (tmp_path / "backups").exists()


def test_a_failing_statement_changes_nothing(tmp_path: Path) -> None:
    path = old_database(tmp_path, "id INTEGER PRIMARY KEY, hotkey VARCHAR(128)")
    result = run_cli("db", "exec", "--data-dir", str(tmp_path), FIX, "ALTER TABLE nope ADD COLUMN x", sites=[])
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("base-runner: error: 'ALTER TABLE nope ADD COLUMN x' failed: no such table: nope")
    assert "nothing was changed; the backup" in line
    assert _columns(path) == ["id", "hotkey"], "the first statement was rolled back with the second"


def test_refused_while_a_server_holds_the_database(sites: dict[str, Path], tmp_path: Path, server) -> None:
    path = old_database(tmp_path, "id INTEGER PRIMARY KEY, hotkey VARCHAR(128)")
    # serve answers /health once it holds the data dir's lock.
    served = server(["--challenge", "example", "--data-dir", str(tmp_path)], [sites["example"]])
    try:
        result = run_cli("db", "exec", "--data-dir", str(tmp_path), FIX, sites=[])
        assert result.returncode == 2
        (line,) = result.stderr.splitlines()
        assert "is in use by another runner (pid" in line
        assert line.endswith("db exec changes nothing while a runner holds the database")
        assert "score" not in _columns(path)
        assert not (tmp_path / "backups").exists()
    finally:
        assert served.stop() == 0
