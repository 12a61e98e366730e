"""A real ``base-runner serve`` process, as the BASE master deploys and calls it."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import httpx
from conftest import logged, start_server, tracebacks


def readiness_gate(url: str, slug: str, version: str, required=("get_weights", "proxy_routes")) -> bool:
    """The master's gate: up to 12 tries, 2 s apart, of /health and /version."""
    for attempt in range(12):
        try:
            health = httpx.get(url + "/health", timeout=5).json()
            info = httpx.get(url + "/version", timeout=5).json()
            if (
                health["status"] == "ok"
                and health["slug"] == slug
                and info["api_version"] == "1.0"
                and info["challenge_version"] == version
                and set(required) <= set(info["capabilities"])
            ):
                return True
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        if attempt < 11:
            time.sleep(2)
    return False


def test_master_deploys_and_calls_the_example(sites: dict[str, Path], tmp_path: Path, server) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "challenge_token").write_text("epoch-token\n")
    data = tmp_path / "data"
    data.mkdir()
    served = server(
        ["--data-dir", str(data)],
        [sites["example"]],
        wait=False,
        BASE_CHALLENGE_SLUG="example",
        CHALLENGE_SHARED_TOKEN_FILE=str(secrets / "challenge_token"),
    )
    assert readiness_gate(served.url, "example", "0.1.0"), served.output()
    assert not logged(served.records(), "no master token")
    with served.client() as client:
        assert client.get("/ready").status_code == 200
        assert client.post("/submissions", json={"hotkey": "5Miner", "score": 42}).status_code == 201
        response = client.get(
            "/internal/v1/get_weights",
            headers={"Authorization": "Bearer epoch-token", "X-Base-Challenge-Slug": "example"},
        )
    assert response.status_code == 200
    assert response.json()["weights"] == {"5Miner": 42.0}
    assert served.stop(signal.SIGTERM) == 0
    assert (data / "challenge.sqlite3").is_file()
    output = served.output()
    assert "epoch-token" not in output
    assert f"SQLite {sqlite3.sqlite_version}" in output
    # Ruled out by one writer connection and the data dir's lock: not worth a paragraph at every start.
    assert "WAL-reset" not in output


def test_data_survives_a_restart(sites: dict[str, Path], tmp_path: Path, server) -> None:
    args = ["--data-dir", str(tmp_path)]
    first = server(args, [sites["example"]])
    with first.client() as client:
        client.post("/submissions", json={"hotkey": "5Kept", "score": 3})
    assert first.stop() == 0
    second = server(args, [sites["example"]])
    with second.client() as client:
        assert client.get("/submissions/5Kept").json() == [3]
    assert second.stop() == 0


def test_startup_fault_is_one_line_and_exit_3(sites: dict[str, Path], tmp_path: Path, server) -> None:
    served = server(["--challenge", "failing-startup", "--data-dir", str(tmp_path)], [sites["testbed"]], wait=False)
    assert served.proc.wait(30) == 3
    output = served.output()
    assert (
        "challenge failing-startup: startup failed: RuntimeError: the model file /data/model.bin is missing" in output
    )
    assert tracebacks(served.records()) == [], output


def test_dead_worker_stops_the_process(sites: dict[str, Path], tmp_path: Path, server) -> None:
    served = server(
        ["--challenge", "crashing-worker", "--data-dir", str(tmp_path)], [sites["testbed"]], CHALLENGE_CRASH_AFTER="3"
    )
    with served.client() as client:
        assert client.get("/ready").status_code == 200
    assert served.proc.wait(30) == 1
    output = served.output()
    assert (
        "challenge crashing-worker: worker scorer crashed: RuntimeError: lost the connection to the scoring backend"
        in output
    )
    # The crash is logged at error level with its traceback, for the operator who reads the log.
    crashes = logged(served.records(), "challenge crashing-worker: worker scorer crashed", "ERROR")
    assert any("lost the connection to the scoring backend" in r.get("exception", "") for r in crashes), crashes


def test_sigint_also_stops_cleanly(sites: dict[str, Path], tmp_path: Path) -> None:
    served = start_server(["--data-dir", str(tmp_path)], [sites["example"]], tmp_path / "log")
    assert served.stop(signal.SIGINT) == 0
