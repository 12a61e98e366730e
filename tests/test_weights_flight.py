"""A slow get_weights under real ``serve`` processes: one computation, shared by every caller."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import eventually, logged
from wire_schemas import reasons_of


def call_all(url: str, callers: int) -> list[tuple[int, float, dict]]:
    """``callers`` concurrent GET /weights: (status, seconds it took, body) each."""

    def one(_: int) -> tuple[int, float, dict]:
        began = time.monotonic()
        response = httpx.get(url + "/weights", timeout=30)
        return response.status_code, time.monotonic() - began, response.json()

    with ThreadPoolExecutor(callers) as pool:
        return list(pool.map(one, range(callers)))


@pytest.mark.parametrize("plain", ["0", "1"], ids=["async", "plain-def"])
def test_five_callers_share_one_slow_computation(sites: dict[str, Path], tmp_path: Path, server, plain: str) -> None:
    served = server(
        ["--challenge", "faults", "--data-dir", str(tmp_path)],
        [sites["testbed"]],
        CHALLENGE_FAULTS_WEIGHTS="sleep:5",
        CHALLENGE_FAULTS_PLAIN=plain,
        CHALLENGE_WEIGHTS_TIMEOUT="1.5",
    )
    first = call_all(served.url, 5)
    assert [status for status, _, _ in first] == [504] * 5
    # Each waited its own timeout, not a multiple of it.
    assert all(1.4 < took < 4 for _, took, _ in first), first
    assert "goes on in the background" in first[0][2]["detail"]
    # Callers during the computation join it; they never start another.
    assert [status for status, _, _ in call_all(served.url, 3)] == [504] * 3
    eventually(lambda: httpx.get(served.url + "/weights-calls").json()["running"] == 0, "the computation to end")
    status, took, body = call_all(served.url, 1)[0]
    assert status == 200 and took < 1, (status, took, body)
    assert body["weights"] == {"5Faults": 1.0}
    calls = httpx.get(served.url + "/weights-calls").json()
    assert calls == {"started": 1, "running": 0, "most": 1}
    assert served.stop() == 0


def test_a_failure_is_shared_by_the_callers_that_waited(sites: dict[str, Path], tmp_path: Path, server) -> None:
    served = server(
        ["--challenge", "faults", "--data-dir", str(tmp_path)], [sites["testbed"]], CHALLENGE_FAULTS_WEIGHTS="fail:1"
    )
    results = call_all(served.url, 5)
    assert [status for status, _, _ in results] == [500] * 5
    assert {body["detail"] for _, _, body in results} == {
        "challenge faults: get_weights raised RuntimeError: the scoring backend is down"
    }
    assert httpx.get(served.url + "/weights-calls").json()["started"] == 1
    # Not cached: the next caller tries again.
    assert call_all(served.url, 1)[0][0] == 500
    assert httpx.get(served.url + "/weights-calls").json()["started"] == 2
    assert served.stop() == 0


def test_a_get_weights_that_blocks_the_loop_is_logged_with_its_stack_and_on_ready(
    sites: dict[str, Path], tmp_path: Path, server
) -> None:
    served = server(
        ["--challenge", "faults", "--data-dir", str(tmp_path)],
        [sites["testbed"]],
        CHALLENGE_FAULTS_WEIGHTS="block:3",
        CHALLENGE_LOOP_STALL="0.5",
    )
    with served.client() as client:
        assert client.get("/ready").status_code == 200
        assert client.get("/weights").status_code == 200
        ready = client.get("/ready")
        reasons = reasons_of(client)
    assert ready.status_code == 503
    (reason,) = [r for r in reasons if "event loop" in r]
    assert reason.startswith("the event loop was blocked for ")
    assert "in get_weights (" in reason and "faults.py" in reason
    (stall,) = logged(served.records(), "the event loop has been blocked for ", "ERROR")
    assert "time.sleep(seconds)" in stall["message"]  # the loop thread's stack, down to the blocking line
    assert served.stop() == 0
