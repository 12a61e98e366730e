"""A real ``base-runner serve`` pushing to the 3.1 ingress double: through writes, a SIGKILL, a restart.

The double (:mod:`master_double`) is a real HTTP server; the runner is a real
process, started as the master deploys it, with ``CHALLENGE_MASTER_BASE_URL``.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import eventually, logged, run_cli
from loopfs import loop_fs
from master_double import MasterDouble

TOKEN = "serve-push-token"
ALICE = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
BOB = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"


@pytest.fixture
def master() -> Iterator[MasterDouble]:
    double = MasterDouble(tokens={"example": TOKEN}).start()
    yield double
    double.release.set()
    if double._server is not None:
        double.stop()


@pytest.fixture
def runner_env(tmp_path: Path, master: MasterDouble) -> dict[str, str]:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    data = tmp_path / "data"
    data.mkdir()
    return {
        "BASE_CHALLENGE_SLUG": "example",
        "CHALLENGE_DATA_DIR": str(data),
        "CHALLENGE_SHARED_TOKEN_FILE": str(token),
        "CHALLENGE_MASTER_BASE_URL": master.url,
        # Long epochs, so that a test never crosses a boundary; quick looks, so that it waits little.
        "CHALLENGE_EPOCH_SECONDS": "1000000",
        "CHALLENGE_PUSH_INTERVAL": "0.2",
    }


def pusher_state(client) -> dict | None:
    """The pusher's check with its details, from the runner's status view (HealthResponse has no field for them);
    ``None`` before its first look."""
    return client.get("/internal/status").json()["checks"].get("pusher")


def acknowledged(client) -> dict | None:
    """The pusher's state once the master acknowledged a push, else ``None``."""
    state = pusher_state(client)
    return state if state and state["snapshot_id"] else None


def failing(client, error: str) -> dict | None:
    """The pusher's state once its error says ``error``, else ``None``."""
    state = pusher_state(client)
    return state if state and error in (state["error"] or "") else None


def test_serve_pushes_what_it_serves_and_a_new_revision_when_it_changes(
    sites: dict[str, Path], server, master: MasterDouble, runner_env: dict[str, str]
) -> None:
    served = server([], [sites["example"]], **runner_env)
    with served.client() as client:
        assert client.post("/submissions", json={"hotkey": ALICE, "score": 3}).status_code == 201
        first = eventually(lambda: list(master.snapshots.values()), "the first push")[0]
        assert first.weights == {ALICE: 3.0} and first.revision == 1
        pulled = client.get(
            "/internal/v1/get_weights", headers={"Authorization": f"Bearer {TOKEN}", "X-Base-Challenge-Slug": "example"}
        ).json()
        assert pulled["weights"] == first.weights
        assert client.post("/submissions", json={"hotkey": BOB, "score": 5}).status_code == 201
        second = eventually(lambda: [s for s in master.snapshots.values() if s.revision == 2], "revision 2")[0]
        assert second.weights == {ALICE: 3.0, BOB: 5.0}
        # The master stores a snapshot before it answers: the runner records the answer a moment later.
        pusher = eventually(lambda: (state := acknowledged(client)) and state["revision"] == 2 and state, "ack 2")
        ready = client.get("/ready")
        assert ready.status_code == 200
        assert {"name": "pusher", "status": "ok", "required": False} in ready.json()["checks"]
        assert pusher["status"] == "ok" and pusher["required"] is False
        assert (pusher["revision"], pusher["snapshot_id"]) == (2, second.snapshot_id)
    assert served.stop(signal.SIGTERM) == 0
    assert TOKEN not in served.output()
    assert len(master.received) == 2, "unchanged weights are not pushed again"

    status = run_cli("push", "status", "--json", sites=[sites["example"]], **runner_env)
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert (shown["revision"], shown["snapshot_id"], shown["pending"]) == (2, second.snapshot_id, None)
    assert shown["ledger_problem"] is None
    again = run_cli("push", "once", sites=[sites["example"]], **runner_env)
    assert again.returncode == 0, again.stderr
    ack = json.loads(again.stdout)
    assert ack["idempotent"] is True and ack["snapshot_id"] == second.snapshot_id
    assert master.received[-1].body == master.received[-2].body


def test_killed_between_stored_and_acknowledged_the_restart_resends_the_same_bytes(
    sites: dict[str, Path], server, master: MasterDouble, runner_env: dict[str, str]
) -> None:
    # The master stores the first push and holds its answer: the runner dies before it hears back.
    master.script("hold")
    served = server([], [sites["example"]], **runner_env)
    with served.client() as client:
        assert client.post("/submissions", json={"hotkey": ALICE, "score": 7}).status_code == 201
    master.wait_for(1)
    eventually(lambda: master.snapshots, "the master to store the push")
    assert served.stop(signal.SIGKILL) == -signal.SIGKILL

    restarted = server([], [sites["example"]], **runner_env)
    received = master.wait_for(2)
    assert received[1].body == received[0].body, "the restart resends the stored bytes"
    assert eventually(lambda: received[1].answer, "the answer to the resend")["idempotent"] is True
    (snapshot,) = master.snapshots.values()
    assert received[1].answer["snapshot_id"] == snapshot.snapshot_id
    # One payload per (epoch, revision), ever.
    assert all(len(digests) == 1 for digests in master.payloads("example").values())
    with restarted.client() as client:
        pusher = eventually(lambda: acknowledged(client), "the acknowledgement")
        assert pusher["snapshot_id"] == snapshot.snapshot_id and pusher["pending"] is None
    assert restarted.stop(signal.SIGTERM) == 0


def test_an_outage_of_the_master_then_its_return(
    sites: dict[str, Path], server, master: MasterDouble, runner_env: dict[str, str]
) -> None:
    master.stop()
    served = server([], [sites["example"]], **runner_env)
    with served.client() as client:
        assert client.post("/submissions", json={"hotkey": ALICE, "score": 1}).status_code == 201
        down = eventually(lambda: failing(client, "no answer"), "the pusher to report the outage")
        assert down["status"] == "degraded" and down["pending"]["attempts"] >= 1
        assert client.get("/ready").status_code == 200, "a failing push never makes the runner unready"
        master.start()
        up = eventually(lambda: acknowledged(client), "the push after")
        assert up["status"] == "ok" and up["pending"] is None
    assert len(master.snapshots) == 1
    assert served.stop(signal.SIGTERM) == 0


def test_no_weights_is_not_pushed_and_is_warned(
    sites: dict[str, Path], server, master: MasterDouble, runner_env: dict[str, str]
) -> None:
    served = server([], [sites["example"]], **runner_env)
    with served.client() as client:
        eventually(lambda: pusher_state(client), "the pusher's first look")
    assert served.stop(signal.SIGTERM) == 0
    # The pusher's own warning, which says what an empty push costs, not only the pusher check's reason.
    assert logged(served.records(), "the master withholds the epoch", "WARNING"), served.output()
    assert master.received == []


def test_without_a_master_url_nothing_is_pushed_nor_stored(
    sites: dict[str, Path], server, runner_env: dict[str, str]
) -> None:
    del runner_env["CHALLENGE_MASTER_BASE_URL"]
    served = server([], [sites["example"]], **runner_env)
    with served.client() as client:
        assert client.post("/submissions", json={"hotkey": ALICE, "score": 1}).status_code == 201
        ready = client.get("/ready").json()
        assert ready["ready"] is True and "pusher" not in [c["name"] for c in ready["checks"]]
    assert served.stop(signal.SIGTERM) == 0
    assert not (Path(runner_env["CHALLENGE_DATA_DIR"]) / ".base-runner" / "push.sqlite3").exists()
    once = run_cli("push", "once", sites=[sites["example"]], **runner_env)
    assert once.returncode == 2 and "CHALLENGE_MASTER_BASE_URL" in once.stderr


def test_a_bad_master_url_is_one_line(sites: dict[str, Path], runner_env: dict[str, str]) -> None:
    runner_env["CHALLENGE_MASTER_BASE_URL"] = "master:8080"
    result = run_cli("push", "once", sites=[sites["example"]], **runner_env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("base-runner: error: CHALLENGE_MASTER_BASE_URL:")


def test_a_full_data_volume_stops_the_ledger_not_the_process_and_the_push_resumes(
    sites: dict[str, Path], server, master: MasterDouble, runner_env: dict[str, str], tmp_path: Path
) -> None:
    with loop_fs(tmp_path, 24) as fs:
        runner_env.update(
            CHALLENGE_DATA_DIR=str(fs.mount),
            # An epoch every 2 s: each one needs a new row in the ledger, weights unchanged or not.
            CHALLENGE_EPOCH_SECONDS="2",
            CHALLENGE_MIN_FREE_MB="2",
            CHALLENGE_DISK_CHECK_INTERVAL="0.3",
            # The database counts a write before SQLite commits it: a computation in between caches
            # the weights without it until the TTL, 60 s by default, longer than this test waits.
            CHALLENGE_WEIGHTS_TTL="1",
        )
        served = server([], [sites["example"]], **runner_env)
        ledger = fs.mount / ".base-runner" / "push.sqlite3"
        with served.client() as client:
            assert client.post("/submissions", json={"hotkey": ALICE, "score": 3}).status_code == 201
            before = eventually(lambda: acknowledged(client), "the first acknowledgement")
            fs.fill()
            full = eventually(lambda: failing(client, str(ledger)), "the pusher to report the full ledger")
            assert full["status"] == "degraded"
            assert full["error"].endswith("OperationalError: database or disk is full"), full["error"]
            pushed = len(master.received)
            # Recorded before the volume filled: still there, and shown, while it is full.
            status = run_cli("push", "status", "--json", sites=[sites["example"]], **runner_env)
            assert status.returncode == 0, status.stderr
            shown = json.loads(status.stdout)
            assert shown["epoch"] >= before["epoch"] and shown["snapshot_id"] is not None
            assert shown["ledger_problem"].startswith(f"the volume {fs.mount} has 0.0 MB free"), shown
            text = run_cli("push", "status", sites=[sites["example"]], **runner_env)
            assert f"ledger: the volume {fs.mount} has 0.0 MB free" in text.stdout, text.stdout
            metrics = client.get("/internal/v1/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
            assert 'base_runner_push_steps_total{outcome="error",status="none"}' in metrics
            time.sleep(2.5)  # a whole epoch on a full volume: the process lives, nothing half-stored is sent
            assert served.proc.poll() is None
            assert len(master.received) == pushed
            (fs.mount / "filler").unlink()
            after = eventually(
                lambda: (state := acknowledged(client)) and state["epoch"] > full["epoch"] and state, "a push after"
            )
            assert after["status"] == "ok" and after["pending"] is None
        assert served.stop(signal.SIGTERM) == 0
    failed = f"challenge example: {full['error']}; nothing is sent until it works"
    (failure,) = logged(served.records(), failed, "ERROR")  # once, for a fault that lasted a dozen looks
    (recovery,) = logged(served.records(), f"challenge example: the push ledger {ledger} works again", "INFO")
    assert failure["time"] < recovery["time"]
    assert TOKEN not in served.output()
