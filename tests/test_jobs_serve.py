"""Durable jobs through real ``serve`` processes: enqueue, retries, kills, SIGTERM, keys, concurrency, cancel.

The ``jobs-lab`` challenge (tests/plugins/testbed) records every attempt in its own table, so each
test reads from the database what ran, when, and whether two runs overlapped. Leases and backoffs
are short (settings and the lab's task options) so that each test takes seconds.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SERVE_TOKEN, Served, eventually, logged, run_cli

MASTER = {"Authorization": f"Bearer {SERVE_TOKEN}", "X-Base-Challenge-Slug": "jobs-lab"}
FAST = {"CHALLENGE_JOBS_LEASE": "1", "CHALLENGE_JOBS_GRACE": "0.5"}


@pytest.fixture
def lab(server: Any, sites: dict[str, Path], tmp_path: Path) -> Callable[..., Served]:
    """Start the jobs lab on one data dir (the same one on every call: a restart)."""
    data = tmp_path / "data"
    data.mkdir()

    def start(**env: str) -> Served:
        return server(["--challenge", "jobs-lab", "--data-dir", str(data)], [sites["testbed"]], **{**FAST, **env})

    return start


def job(served: Served, job_id: str) -> dict[str, Any]:
    with served.client() as client:
        answer = client.get(f"/internal/v1/jobs/{job_id}", headers=MASTER)
    assert answer.status_code == 200, answer.text
    return answer.json()


def jobs_list(served: Served, **params: Any) -> list[dict[str, Any]]:
    with served.client() as client:
        answer = client.get("/internal/v1/jobs", headers=MASTER, params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()["jobs"]


def submit(served: Served, **body: Any) -> dict[str, Any]:
    with served.client() as client:
        answer = client.post("/lab/submissions", json={"hotkey": "5Miner", **body})
    assert answer.status_code == 200, answer.text
    return answer.json()


def attempts(served: Served) -> dict[str, Any]:
    with served.client() as client:
        return client.get("/lab/attempts").json()


def finished(served: Served, job_id: str, state: str = "succeeded") -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        found = job(served, job_id)
        return found if found["state"] == state else None

    return check


def test_a_rolled_back_enqueue_leaves_no_job_and_a_committed_one_scores(lab: Callable[..., Served]) -> None:
    served = lab()
    assert submit(served, hotkey="5Dropped", rollback=True)["committed"] is False
    kept = submit(served, hotkey="5Kept")
    done = eventually(finished(served, kept["job_id"]), "the committed job's success")
    assert done["attempts"] == 1 and done["error"] is None
    # The rolled-back job took the same id, and lost it with its transaction: one job, the kept one's.
    assert [(j["id"], j["args"]) for j in jobs_list(served)] == [
        (kept["job_id"], {"submission_id": kept["submission_id"]})
    ]
    with served.client() as client:
        weights = client.get("/internal/v1/get_weights", headers=MASTER).json()["weights"]
    assert weights == {"5Kept": 1.0 + kept["submission_id"]}
    records = served.records()
    line = logged(records, f"job {kept['job_id']} evaluate attempt 1/3 succeeded")
    assert line and line[0]["job_id"] == kept["job_id"] and line[0]["correlation_id"]
    assert served.stop() == 0


def test_a_failing_task_is_retried_with_growing_delays_then_dead_with_its_error(lab: Callable[..., Served]) -> None:
    served = lab()
    failing = submit(served, behaviour="fail")
    dead = eventually(finished(served, failing["job_id"], "dead"), "the failing job's death")
    assert dead["attempts"] == 3
    assert dead["error"] == f"RuntimeError: the judge failed on submission {failing['submission_id']}"
    assert "Traceback" in dead["traceback"] and "jobs_lab.py" in dead["traceback"]
    runs = [a for a in attempts(served)["attempts"] if a["job"] == failing["job_id"]]
    assert [a["attempt"] for a in runs] == [1, 2, 3]
    records = served.records()
    retried = logged(records, f"job {failing['job_id']} evaluate attempt", "WARNING")
    assert [(r["attempt"], r["outcome"]) for r in retried] == [(1, "retried"), (2, "retried")]
    # backoff 0.4 s, doubled each retry, times 0.8 to 1.2: 0.32-0.48 s, then 0.64-0.96 s (logged to 0.1 s).
    delays = [float(r["message"].rpartition("runs again in ")[2].rstrip("s")) for r in retried]
    assert 0.3 <= delays[0] <= 0.5 and 0.6 <= delays[1] <= 1.0, delays
    # And no retry started before its delay was over.
    waited = [later["started"] - earlier["ended"] for earlier, later in zip(runs, runs[1:], strict=False)]
    assert all(gap >= delay - 0.05 for gap, delay in zip(waited, delays, strict=True)), (waited, delays)
    assert logged(records, f"job {failing['job_id']} evaluate attempt 3/3 dead", "ERROR")
    assert served.stop() == 0


def test_permanent_ends_a_job_after_one_attempt(lab: Callable[..., Served]) -> None:
    served = lab()
    permanent = submit(served, behaviour="permanent")
    dead = eventually(finished(served, permanent["job_id"], "dead"), "the job's death")
    assert dead["attempts"] == 1
    assert dead["error"] == f"Permanent: submission {permanent['submission_id']} cannot be evaluated"
    assert [a["attempt"] for a in attempts(served)["attempts"]] == [1]
    assert served.stop() == 0


def test_two_enqueues_with_one_key_make_one_job(lab: Callable[..., Served]) -> None:
    served = lab()
    first = submit(served, behaviour="sleep:0.5", key="submission:one")
    second = submit(served, behaviour="sleep:0.5", key="submission:one")
    other = submit(served, behaviour="sleep:0.5", key="submission:two")
    assert first["job_id"] == second["job_id"] != other["job_id"]
    eventually(finished(served, first["job_id"]), "the keyed job's success")
    eventually(finished(served, other["job_id"]), "the other job's success")
    assert len(jobs_list(served)) == 2
    # Once the first is done, the key is free again: a new enqueue makes a new job.
    again = submit(served, key="submission:one")
    assert again["job_id"] not in (first["job_id"], other["job_id"])
    assert served.stop() == 0


def test_a_task_with_concurrency_one_never_overlaps_itself(lab: Callable[..., Served]) -> None:
    served = lab(CHALLENGE_JOBS_CONCURRENCY="8")
    with served.client() as client:
        ids = client.post("/lab/serial", json={"count": 50}).json()["job_ids"]
    assert len(set(ids)) == 50
    eventually(lambda: len(jobs_list(served, state="succeeded", limit=100)) == 50, "50 serial jobs", timeout=120)
    found = attempts(served)
    runs = sorted((a["started"], a["ended"]) for a in found["attempts"] if a["task"] == "serial")
    assert len(runs) == 50
    assert all(earlier_end <= later_start for (_, earlier_end), (later_start, _) in zip(runs, runs[1:], strict=False))
    assert found["most_at_once"]["serial"] == 1
    assert served.stop() == 0


def test_kill_9_during_a_job_costs_one_attempt_and_it_runs_again_soon_after_restart(
    lab: Callable[..., Served],
) -> None:
    served = lab()
    slow = submit(served, behaviour="sleep:3")
    eventually(lambda: job(served, slow["job_id"])["state"] == "running", "the job's start")
    served.stop(signal.SIGKILL)
    restarted = lab()
    ready = time.time()
    done = eventually(finished(restarted, slow["job_id"]), "the job's success after the restart", timeout=60)
    assert done["attempts"] == 2
    first, second = attempts(restarted)["attempts"]
    assert (first["attempt"], first["ended"], second["attempt"]) == (1, None, 2)  # the first never ended
    # Within seconds: once its lease (1 s) expired, at the next look (every third of a lease).
    assert second["started"] - ready < 5, second["started"] - ready
    assert logged(restarted.records(), f"job {slow['job_id']} evaluate: attempt 1 lost its lease")
    with restarted.client() as client:
        metrics = client.get("/internal/v1/metrics", headers=MASTER).text
    # The take-over is a failed attempt, and the rerun a start and a success.
    for family in ("takeover", "failed", "started", "succeeded"):
        assert f'base_runner_jobs_{family}_total{{task="evaluate"}} 1.0' in metrics, family
    assert restarted.stop() == 0


def test_sigterm_during_a_job_exits_0_soon_and_the_job_completes_after_restart_unspent(
    lab: Callable[..., Served],
) -> None:
    served = lab()
    slow = submit(served, behaviour="sleep:3")
    eventually(lambda: job(served, slow["job_id"])["state"] == "running", "the job's start")
    stopping = time.monotonic()
    assert served.stop(signal.SIGTERM, timeout=10) == 0
    assert time.monotonic() - stopping < 10
    assert logged(served.records(), f"job {slow['job_id']} evaluate attempt 1/3 requeued")
    restarted = lab()
    queued = job(restarted, slow["job_id"])
    assert queued["attempts"] in (0, 1)  # put back unspent; perhaps claimed again already
    done = eventually(finished(restarted, slow["job_id"]), "the job's success after the restart")
    assert done["attempts"] == 1
    assert restarted.stop() == 0


def test_sigterm_runs_the_jobs_grace_while_requests_drain_so_both_fit_in_10_s(lab: Callable[..., Served]) -> None:
    # Default grace (5 s) and uvicorn's own 8 s for requests: one after the other they would take 13 s.
    served = lab(CHALLENGE_JOBS_GRACE="5")
    slow = submit(served, behaviour="sleep:30")
    eventually(lambda: job(served, slow["job_id"])["state"] == "running", "the job's start")
    with ThreadPoolExecutor(1) as pool:
        hanging = pool.submit(httpx.get, served.url + "/lab/slow", params={"seconds": 30}, timeout=30)
        time.sleep(0.3)  # the request is in flight
        stopping = time.monotonic()
        assert served.stop(signal.SIGTERM, timeout=15) == 0
        took = time.monotonic() - stopping
        try:
            cut = hanging.result().status_code
        except httpx.HTTPError as exc:
            cut = type(exc).__name__
    assert took < 10, took
    assert cut != 200, "the request was cut at uvicorn's 8 s, not served"
    assert logged(served.records(), f"job {slow['job_id']} evaluate attempt 1/3 requeued")


def test_a_request_still_draining_after_the_jobs_stopped_enqueues_for_the_next_start(
    lab: Callable[..., Served],
) -> None:
    served = lab()
    with ThreadPoolExecutor(1) as pool:
        late = pool.submit(
            httpx.post, served.url + "/lab/submissions", json={"hotkey": "5Late", "pause": 2}, timeout=30
        )
        time.sleep(0.5)  # in flight: past the write gate, not written yet
        assert served.stop(signal.SIGTERM, timeout=15) == 0
        answer = late.result()
    assert answer.status_code == 200, answer.text  # the jobs stopped 1.5 s before it enqueued
    restarted = lab()
    eventually(finished(restarted, answer.json()["job_id"]), "the late job's success after the restart")
    assert restarted.stop() == 0


@pytest.mark.parametrize(
    ("part", "which"), [("base-runner:jobs", "claim loop"), ("base-runner:jobs-leases", "lease timer")]
)
def test_a_dead_scheduler_exits_non_zero_so_it_is_restarted_as_after_a_dead_worker(
    lab: Callable[..., Served], part: str, which: str
) -> None:
    served = lab()
    killer = submit(served, behaviour=f"kill:{part}")
    assert served.proc.wait(20) == 1
    reason = f"the jobs scheduler stopped: its {which} was cancelled"
    assert f"base-runner: error: challenge jobs-lab: {reason}" in served.output()
    assert logged(served.records(), f"jobs: {reason}", "ERROR")
    # Nothing lost: the job that was running finished, or was put back, and the restarted runner runs jobs.
    restarted = lab()
    eventually(finished(restarted, killer["job_id"]), "the killer job's success")
    after = submit(restarted)
    eventually(finished(restarted, after["job_id"]), "a new job's success after the restart")
    assert restarted.stop() == 0


def test_a_task_that_outlives_its_lease_tenfold_never_runs_twice_at_once(lab: Callable[..., Served]) -> None:
    served = lab(CHALLENGE_JOBS_LEASE="0.4")
    slow = submit(served, behaviour="sleep:4")
    done = eventually(finished(served, slow["job_id"]), "the long job's success")
    assert done["attempts"] == 1 and done["progress"] == 1.0
    assert [a["attempt"] for a in attempts(served)["attempts"]] == [1]
    assert not logged(served.records(), "lost its lease")
    assert served.stop() == 0


def test_cancel_stops_a_running_job_and_a_queued_one_never_runs(lab: Callable[..., Served]) -> None:
    served = lab()
    done = submit(served)
    eventually(finished(served, done["job_id"]), "the first job's success")
    running = submit(served, behaviour="sleep:20")
    later = submit(served, behaviour="ok", delay=60)
    eventually(lambda: job(served, running["job_id"])["state"] == "running", "the job's start")
    with served.client() as client:
        stopped = client.post(f"/internal/v1/jobs/{running['job_id']}/cancel", headers=MASTER)
        never = client.post(f"/internal/v1/jobs/{later['job_id']}/cancel", headers=MASTER)
        again = client.post(f"/internal/v1/jobs/{later['job_id']}/cancel", headers=MASTER)
        too_late = client.post(f"/internal/v1/jobs/{done['job_id']}/cancel", headers=MASTER)
    assert stopped.status_code == 200 and stopped.json()["state"] == "cancelled"
    assert never.status_code == 200 and never.json()["state"] == "cancelled"
    assert again.status_code == 200 and again.json()["state"] == "cancelled"
    assert too_late.status_code == 409 and too_late.json()["code"] == "job_conflict"
    assert "succeeded" in too_late.json()["detail"]
    runs = [a for a in attempts(served)["attempts"] if a["job"] != done["job_id"]]
    assert [(a["job"], a["ended"] is not None) for a in runs] == [(running["job_id"], True)]  # it saw CancelledError
    assert logged(served.records(), f"job {running['job_id']} evaluate attempt 1/3 cancelled")
    assert served.stop() == 0


def test_the_jobs_commands_list_show_retry_and_cancel_beside_the_running_server(
    lab: Callable[..., Served],
) -> None:
    served = lab()

    def cli(*args: str) -> Any:
        return run_cli("jobs", *args, "--url", served.url, CHALLENGE_SHARED_TOKEN=SERVE_TOKEN)

    dead = submit(served, behaviour="permanent")
    eventually(finished(served, dead["job_id"], "dead"), "the job's death")
    running = submit(served, behaviour="sleep:20")
    eventually(lambda: job(served, running["job_id"])["state"] == "running", "the job's start")

    listed = cli("list", "--state", "dead")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split()[:4] == ["ID", "TASK", "STATE", "ATTEMPTS"]
    assert row.split()[:4] == [dead["job_id"], "evaluate", "dead", "1"] and "Permanent: submission" in row
    shown = cli("show", dead["job_id"])
    assert shown.returncode == 0 and "Traceback (most recent call last)" in shown.stdout
    assert f'"submission_id": {dead["submission_id"]}' in shown.stdout

    cancelled = cli("cancel", running["job_id"], "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["state"] == "cancelled"
    runs = [a for a in attempts(served)["attempts"] if a["job"] == running["job_id"]]
    assert [a["ended"] is not None for a in runs] == [True]  # its task saw CancelledError and unwound

    # The dead job runs again, with its attempts counted afresh: Permanent ends it once more.
    retried = cli("retry", dead["job_id"])
    assert retried.returncode == 0 and f"job {dead['job_id']}: evaluate, queued" in retried.stdout
    eventually(lambda: len([a for a in attempts(served)["attempts"] if a["job"] == dead["job_id"]]) == 2, "the rerun")
    eventually(finished(served, dead["job_id"], "dead"), "the retried job's death")
    done = submit(served)
    eventually(finished(served, done["job_id"]), "a job's success")
    refused = cli("retry", done["job_id"])
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"base-runner: error: job {done['job_id']} is succeeded; only a dead or cancelled job can be retried"
    )
    missing = cli("show", "999999")
    assert missing.returncode == 1 and "no job 999999" in missing.stderr
    wrong = run_cli("jobs", "list", "--url", served.url, CHALLENGE_SHARED_TOKEN="not-the-token")
    assert wrong.returncode == 2 and "refused the token" in wrong.stderr
    assert served.stop() == 0
    gone = cli("list")
    assert gone.returncode == 3 and "is the instance running?" in gone.stderr


def test_the_loop_watchdog_names_the_job_whose_task_blocked_the_loop(lab: Callable[..., Served]) -> None:
    served = lab(CHALLENGE_LOOP_STALL="0.5")
    blocking = submit(served, behaviour="block:2")
    eventually(finished(served, blocking["job_id"]), "the blocking job's end")
    with served.client() as client:
        reasons = client.get("/internal/status").json()["checks"]["loop"]["reasons"]
    (reason,) = reasons
    assert reason.startswith("the event loop was blocked for ")
    # Where the loop thread was, and in which job: the task named for it.
    assert "in evaluate (" in reason and "jobs_lab.py" in reason
    assert f", in job {blocking['job_id']} (evaluate): every request waited" in reason
    assert served.stop() == 0


def test_status_shows_the_queue_by_task_and_state(lab: Callable[..., Served]) -> None:
    served = lab()

    def status() -> Any:
        return run_cli("status", "--url", served.url, CHALLENGE_SHARED_TOKEN=SERVE_TOKEN)

    assert "jobs: none queued, running or dead" in status().stdout
    dead = submit(served, behaviour="permanent")
    eventually(finished(served, dead["job_id"], "dead"), "the job's death")
    submit(served, behaviour="sleep:20")
    submit(served, behaviour="ok", delay=60)

    # Counted every third of a lease (1 s here).
    def counted() -> str | None:
        text = status().stdout
        return text if "evaluate 1 dead, 1 queued, 1 running" in text else None

    shown = eventually(counted, "the queue in status")
    (jobs_line,) = [line for line in shown.splitlines() if line.startswith("jobs: ")]
    assert jobs_line == "jobs: evaluate 1 dead, 1 queued, 1 running"  # the queued one is not due yet
    assert served.stop() == 0


def test_finished_jobs_are_pruned_after_the_retention_and_dead_ones_kept(lab: Callable[..., Served]) -> None:
    served = lab(CHALLENGE_JOBS_RETENTION="1")
    done = submit(served)
    dead = submit(served, behaviour="permanent")
    eventually(finished(served, done["job_id"]), "the job's success")
    eventually(finished(served, dead["job_id"], "dead"), "the other job's death")
    eventually(lambda: [j["id"] for j in jobs_list(served)] == [dead["job_id"]], "the succeeded job's pruning")
    assert logged(served.records(), "jobs: pruned 1 finished jobs older than 1s")
    assert served.stop() == 0


def test_check_on_a_copy_of_real_data_runs_none_of_its_jobs(
    lab: Callable[..., Served], sites: dict[str, Path], tmp_path: Path
) -> None:
    served = lab()
    waiting = submit(served, behaviour="permanent", delay=3600)
    assert served.stop() == 0
    with sqlite3.connect(tmp_path / "data" / "challenge.sqlite3") as conn:
        conn.execute("UPDATE base_runner_jobs SET run_at = 0")  # due now
    conn.close()
    result = run_cli("check", "--challenge", "jobs-lab", "--data-dir", str(tmp_path / "data"), sites=[sites["testbed"]])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"job {waiting['job_id']}" not in result.stderr, "check ran a job of the copied data"
