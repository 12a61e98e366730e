"""A clean stop is a clean exit: SIGTERM while a worker writes, in every stop, and the fixtures' teardown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import alarms, clean_env

STOPS = 8


def wait_for_rows(url: str, at_least: int) -> None:
    deadline = time.monotonic() + 20
    while httpx.get(url + "/rows", timeout=5).json()["rows"] < at_least:
        assert time.monotonic() < deadline, "the worker wrote nothing"
        time.sleep(0.02)


def test_sigterm_while_a_worker_writes_exits_0_every_time(sites: dict[str, Path], tmp_path: Path, server) -> None:
    exits = []
    for stop in range(STOPS):
        served = server(
            ["--challenge", "faults", "--data-dir", str(tmp_path)], [sites["testbed"]], CHALLENGE_FAULTS_WORKER="1"
        )
        wait_for_rows(served.url, 10 * (stop + 1))
        exits.append(served.stop(signal.SIGTERM))
        assert alarms(served.records()) == [], served.output()
    assert exits == [0] * STOPS


FIXTURE_TESTS = """
import asyncio
import os

import pytest

os.environ["CHALLENGE_FAULTS_WORKER"] = "1"


@pytest.fixture
def challenge_slug():
    return "faults"


@pytest.mark.parametrize("run", range({runs}))
async def test_rows_are_written(run, challenge_client):
    while (await challenge_client.get("/rows")).json()["rows"] < 5 * (run + 1):
        await asyncio.sleep(0.01)
"""


def test_fixture_teardown_with_a_writing_worker_logs_no_crash(sites: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "test_writer.py").write_text(FIXTURE_TESTS.replace("{runs}", "12"))
    env = clean_env([sites["testbed"]])
    env["PYTHONPATH"] += os.pathsep + str(tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "log_cli=true",
            "--log-cli-level=INFO",
            str(tmp_path / "test_writer.py"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "12 passed" in output
    assert "crashed" not in output and "PendingRollbackError" not in output and "Exception during reset" not in output
