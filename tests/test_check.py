"""``base-runner check``: the contract checks an author runs before publishing, passing and failing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import run_cli

from base_runner._plugins.plugins import HOOK_SHAPES

CHECKS = ["load", "routes", "tasks", "tables", "startup", "get_weights", "readiness gate", "master weights", "shutdown"]


def test_a_good_challenge_passes_every_check_and_leaves_nothing_behind(sites: dict[str, Path], tmp_path: Path) -> None:
    # TMPDIR is where the check makes its data dir: it must be empty again afterwards.
    result = run_cli(
        "check",
        sites=[sites["example"], sites["testbed"]],
        TMPDIR=str(tmp_path),
        BASE_CHALLENGE_SLUG="example",
        # The check uses a database of its own, never the one configured.
        CHALLENGE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'nowhere' / 'x.sqlite3'}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.partition(":")[0] for line in lines[:-1]] == [f"PASS {check}" for check in CHECKS]
    assert lines[0] == "PASS load: example (example-challenge 0.1.0), hooks: get_weights, register_routers"
    assert lines[2] == "PASS tasks: the challenge registers no task"
    assert lines[3] == "PASS tables: created submissions"
    assert lines[-1] == "example: every check passed"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "failed", "reason"),
    [
        (
            "broken-import",
            "load",
            "challenge broken-import (runner-testbed 2.5.0): importing runner_testbed.broken_import failed: "
            "ModuleNotFoundError: No module named 'a_module_that_does_not_exist'; the module "
            "'a_module_that_does_not_exist' is not installed: add the package that provides it to the challenge's "
            "dependencies",
        ),
        (
            "reserved-route",
            "routes",
            "challenge reserved-route (runner-testbed 2.5.0): a router claims /internal/v1/get_weights, which the "
            "runner serves; move the route elsewhere (reserved: /health, /ready, /version, /weights, /internal/...)",
        ),
        (
            "shadowed",
            "routes",
            "GET /items/latest is shadowed by GET /items/{item_id}, declared before it: declare it first; "
            "POST /items is declared twice; the second never runs",
        ),
        (
            "bad-tasks",
            "tasks",
            "challenge bad-tasks (runner-testbed 2.5.0): register_tasks: evaluate is not a task: "
            "decorate it with @jobs.task (from base_runner import jobs)",
        ),
        (
            "unresolved-task",
            "tasks",
            "task evaluate: its annotations do not resolve (NameError: name 'Submission' is not defined); "
            "import what they name",
        ),
        ("failing-startup", "startup", "raised RuntimeError: the model file /data/model.bin is missing"),
        (
            "generator-lifespan",
            "startup",
            "raised TypeError: lifespan returned generator, not an async context manager; "
            f"write it as {HOOK_SHAPES['lifespan']}",
        ),
        (
            "bad-weights",
            "get_weights",
            "2 invalid entries, which the runner drops: '5NaN': value is NaN; '5Negative': value is negative",
        ),
    ],
)
def test_a_failing_check_is_one_line_with_the_reason(
    sites: dict[str, Path], tmp_path: Path, name: str, failed: str, reason: str
) -> None:
    result = run_cli("check", "--challenge", name, sites=[sites["testbed"]], TMPDIR=str(tmp_path))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    ran = CHECKS[: CHECKS.index(failed)]
    assert [line.partition(":")[0] for line in lines][: len(ran) + 1] == [f"PASS {c}" for c in ran] + [f"FAIL {failed}"]
    assert [line for line in lines if line.startswith("FAIL")] == [f"FAIL {failed}: {reason}"]
    assert result.stderr.strip().splitlines()[-1] == f"{name}: 1 check failed; fix them before publishing"
    assert "Traceback" not in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []


def test_check_lists_each_registered_task_with_its_options(sites: dict[str, Path], tmp_path: Path) -> None:
    result = run_cli("check", "--challenge", "jobs-lab", sites=[sites["testbed"]], TMPDIR=str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    (tasks,) = [line for line in result.stdout.splitlines() if line.startswith("PASS tasks:")]
    assert tasks == (
        "PASS tasks: evaluate(job: base_runner.jobs.Job, submission_id: int) -> None: 3 attempts, "
        "timeout 30s, backoff 0.4s; serial(job: base_runner.jobs.Job, number: int) -> None: "
        "1 attempt, timeout 600s, concurrency 1, backoff 5s"
    )


def test_a_get_weights_that_blocks_the_event_loop_fails_the_check(sites: dict[str, Path], tmp_path: Path) -> None:
    def check(weights: str) -> list[str]:
        result = run_cli(
            "check",
            "--challenge",
            "faults",
            sites=[sites["testbed"]],
            TMPDIR=str(tmp_path),
            CHALLENGE_FAULTS_WEIGHTS=weights,
        )
        return [line for line in result.stdout.splitlines() if line.startswith("FAIL")]

    (failed,) = check("block:1")
    assert failed.startswith("FAIL get_weights: blocks the event loop for 1.")
    assert "make it a plain def" in failed
    assert check("sleep:1") == []


def test_an_unknown_challenge_is_a_selection_error(sites: dict[str, Path]) -> None:
    result = run_cli("check", "--challenge", "nope", sites=[sites["example"]])
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "base-runner: error: no challenge named 'nope' is installed; installed: example (example-challenge 0.1.0)"
    )


def _files(data: Path) -> dict[Path, bytes]:
    # SQLite's -wal and -shm side files appear whenever a WAL database is opened, even read-only.
    return {
        p.relative_to(data): p.read_bytes()
        for p in data.rglob("*")
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


def test_check_on_a_copy_of_real_data(sites: dict[str, Path], tmp_path: Path) -> None:
    # Rows an older version wrote: SQLite keeps a string in an INTEGER column, and get_weights returns it.
    data = tmp_path / "data"
    data.mkdir()
    (data / "artifacts").mkdir()
    (data / "artifacts" / "a.bin").write_bytes(b"kept")
    conn = sqlite3.connect(data / "challenge.sqlite3")
    with conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE submissions (id INTEGER PRIMARY KEY, hotkey VARCHAR(128), score INTEGER)")
        conn.executemany("INSERT INTO submissions (hotkey, score) VALUES (?, ?)", [("5A", 3), ("5B", "high")])
    conn.close()
    before = _files(data)
    empty = run_cli("check", "--challenge", "example", sites=[sites["example"]], TMPDIR=str(tmp_path))
    assert empty.returncode == 0, empty.stdout
    real = run_cli(
        "check", "--challenge", "example", "--data-dir", str(data), sites=[sites["example"]], TMPDIR=str(tmp_path)
    )
    assert real.returncode == 1
    assert (
        "FAIL get_weights: challenge example: get_weights raised ValueError: could not convert string to float: 'high'"
    ) in real.stdout.splitlines()
    after = _files(data)
    assert after == before, "check never writes the data dir it copies"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "the copy is removed"
