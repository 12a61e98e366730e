"""Schema drift between the models and a live database, and the `db` commands."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from conftest import logged, run_cli
from wire_schemas import ErrorResponse, HealthResponse


def old_database(data: Path, columns: str) -> Path:
    path = data / "challenge.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE submissions ({columns})")
        conn.execute("INSERT INTO submissions (id, hotkey) VALUES (1, '5Old')")
    return path


def test_db_check_reports_each_difference_with_its_fix(sites: dict[str, Path], tmp_path: Path) -> None:
    old_database(tmp_path, "id INTEGER PRIMARY KEY, hotkey INTEGER, added_later TEXT")
    result = run_cli("db", "check", "--data-dir", str(tmp_path), sites=[sites["example"]])
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert (
        "drift: table submissions: column hotkey is INTEGER in the database but VARCHAR(128) in the model; "
        "SQLite cannot change a column's type in place: rebuild the table as "
        "https://www.sqlite.org/lang_altertable.html#otheralter shows"
    ) in lines
    assert (
        "drift: table submissions: column score (INTEGER) is missing; "
        "fix: ALTER TABLE submissions ADD COLUMN score INTEGER NOT NULL DEFAULT <value>"
    ) in lines
    assert (
        "note: table submissions: index ix_submissions_hotkey_score is missing; "
        "fix: CREATE INDEX ix_submissions_hotkey_score ON submissions (hotkey, score)" in lines
    )
    assert not any("added_later" in line for line in lines), "an extra column is not drift"
    assert "2 differences to fix by hand" in result.stderr


def test_db_check_passes_on_a_fresh_database(sites: dict[str, Path], tmp_path: Path) -> None:
    init = run_cli("db", "init", "--data-dir", str(tmp_path), sites=[sites["example"]])
    assert init.returncode == 0, init.stderr
    assert init.stdout.strip() == "created 1 table: submissions"
    again = run_cli("db", "init", "--data-dir", str(tmp_path), sites=[sites["example"]])
    assert again.stdout.startswith("nothing to create")
    check = run_cli("db", "check", "--data-dir", str(tmp_path), sites=[sites["example"]])
    assert check.returncode == 0
    assert check.stdout.strip() == "the database matches the models of example"


def test_db_check_without_a_database(sites: dict[str, Path], tmp_path: Path) -> None:
    result = run_cli("db", "check", "--data-dir", str(tmp_path), sites=[sites["example"]])
    assert result.returncode == 2
    assert "no database at" in result.stderr and "db init" in result.stderr
    assert not (tmp_path / "challenge.sqlite3").exists()


def test_ready_is_503_until_the_drift_is_fixed(sites: dict[str, Path], tmp_path: Path, server) -> None:
    path = old_database(tmp_path, "id INTEGER PRIMARY KEY, hotkey VARCHAR(128)")
    served = server(["--data-dir", str(tmp_path)], [sites["example"]])
    with served.client() as client:
        ready = client.get("/ready")
        assert ready.status_code == 503
        body = HealthResponse.model_validate(ready.json())
        assert (body.status, [c.name for c in body.checks if c.status != "ok"]) == ("unhealthy", ["schema"])
        health = client.get("/health")
        assert health.status_code == 200 and health.json() == ready.json()  # alive, just not ready
        # No write lands in a database that does not match the models.
        refused = client.post("/submissions", json={"hotkey": "5New", "score": 1})
        assert refused.status_code == 503
        assert ErrorResponse.model_validate(refused.json()).code == "runtime_not_ready"
        assert "schema" in refused.json()["detail"]
        with sqlite3.connect(path) as conn:
            conn.execute("ALTER TABLE submissions ADD COLUMN score INTEGER NOT NULL DEFAULT 0")
        # The refused write's own probe sees the fix: no /ready call is needed before writing again.
        time.sleep(1.1)
        assert client.post("/submissions", json={"hotkey": "5New", "score": 1}).status_code == 201
        assert client.get("/ready").status_code == 200
        assert client.get("/submissions/5Old").json() == [0]
    assert served.stop() == 0
    records = served.records()
    # A missing column blocks writes: an error, not a note.
    assert logged(records, "schema drift: table submissions: column score (INTEGER) is missing", "ERROR"), records
    assert logged(records, "check schema fails: table submissions: column score (INTEGER) is missing; fix: ALTER")


def test_db_inspect_is_read_only(sites: dict[str, Path], tmp_path: Path) -> None:
    run_cli("db", "init", "--data-dir", str(tmp_path), sites=[sites["example"]])
    path = tmp_path / "challenge.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO submissions (hotkey, score) VALUES (?, ?)", [("5A", 1)] * 3)
    # The -shm file is SQLite's shared-memory index, which every reader updates; data lives in the other two.
    files = [path, tmp_path / "challenge.sqlite3-wal"]
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_size, p.read_bytes()) for p in files}
    result = run_cli("db", "inspect", "--json", "--data-dir", str(tmp_path), sites=[])
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["path"] == str(path)
    assert facts["journal_mode"] == "wal"
    assert facts["tables"] == {"submissions": 3}
    assert facts["size"] == path.stat().st_size
    assert facts["sqlite_version"] == sqlite3.sqlite_version
    after = {p.name: (p.stat().st_mtime_ns, p.stat().st_size, p.read_bytes()) for p in files}
    assert after == before
    text = run_cli("db", "inspect", "--data-dir", str(tmp_path), sites=[])
    assert "  submissions  3 rows" in text.stdout and "journal mode: wal" in text.stdout


def test_db_inspect_on_a_live_database(sites: dict[str, Path], tmp_path: Path, server) -> None:
    served = server(["--data-dir", str(tmp_path)], [sites["example"]])
    with served.client() as client:
        for score in range(5):
            client.post("/submissions", json={"hotkey": "5Live", "score": score})
        result = run_cli("db", "inspect", "--json", "--data-dir", str(tmp_path), sites=[])
        # The runner's own jobs queue lives in the challenge's file, so inspect counts it too.
        assert json.loads(result.stdout)["tables"] == {"base_runner_jobs": 0, "submissions": 5}
        assert json.loads(result.stdout)["wal_size"] > 0
        assert client.post("/submissions", json={"hotkey": "5Live", "score": 9}).status_code == 201
    assert served.stop() == 0


def test_db_inspect_without_a_database(tmp_path: Path) -> None:
    result = run_cli("db", "inspect", "--data-dir", str(tmp_path), sites=[])
    assert result.returncode == 2
    assert result.stderr.strip() == f"base-runner: error: no database at {tmp_path / 'challenge.sqlite3'}"
