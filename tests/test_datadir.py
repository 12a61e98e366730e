"""The data dir under real ``serve`` processes: one runner at a time, and a truthful /ready."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from conftest import logged, tracebacks


def test_a_second_runner_waits_then_exits_2_naming_the_holder(sites: dict[str, Path], tmp_path: Path, server) -> None:
    args = ["--data-dir", str(tmp_path)]
    first = server(args, [sites["example"]])
    began = time.monotonic()
    second = server(args, [sites["example"]], wait=False, CHALLENGE_LOCK_WAIT="1.5")
    assert second.proc.wait(30) == 2
    assert time.monotonic() - began >= 1.5
    output = second.output()
    assert f"is in use by another runner (pid {first.proc.pid} on " in output
    assert "CHALLENGE_LOCK_WAIT" in output and tracebacks(second.records()) == [], output
    with first.client() as client:
        assert client.get("/ready").status_code == 200
    assert first.stop() == 0


def test_a_rolling_update_waits_for_the_old_runner(sites: dict[str, Path], tmp_path: Path, server) -> None:
    args = ["--data-dir", str(tmp_path)]
    old = server(args, [sites["example"]])
    with old.client() as client:
        assert client.post("/submissions", json={"hotkey": "5Old", "score": 1}).status_code == 201
    new = server(args, [sites["example"]], wait=False, CHALLENGE_LOCK_WAIT="30")
    # On a loaded machine the new process may take seconds to import before it reaches the lock.
    deadline = time.monotonic() + 30
    while "in use by another runner" not in new.output():
        assert new.proc.poll() is None and time.monotonic() < deadline, new.output()
        time.sleep(0.1)
    with httpx.Client(base_url=new.url) as client:
        try:
            client.get("/health", timeout=1)
            raise AssertionError("the second runner served while the first held the data dir")
        except httpx.TransportError:
            pass
    assert old.stop() == 0
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(new.url + "/submissions/5Old", timeout=1).json() == [1]:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, new.output()
        time.sleep(0.1)
    assert new.stop() == 0


def test_ready_says_no_master_token_is_configured(sites: dict[str, Path], tmp_path: Path, server) -> None:
    token_file = tmp_path / "token"
    served = server(
        ["--data-dir", str(tmp_path)],
        [sites["example"]],
        CHALLENGE_SHARED_TOKEN_FILE=str(token_file),
    )
    with served.client() as client:
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert [c["name"] for c in ready.json()["checks"] if c["status"] != "ok"] == ["auth"], ready.json()
        (reason,) = client.get("/internal/status").json()["checks"]["auth"]["reasons"]
        assert "no master token is configured" in reason
        token_file.write_text("now-mounted\n")
        assert client.get("/ready").status_code == 200
    assert served.stop() == 0
    # serve said why at its start, once: what it means and how to set it.
    (line,) = logged(served.records(), "no master token is configured", "WARNING")
    assert "/health answers unhealthy and /ready false: the master cannot pull the weights" in line["message"]
    assert "CHALLENGE_SHARED_TOKEN=dev-token" in line["message"] and str(token_file) in line["message"]
