"""Jobs in a challenge's own tests (the run_jobs and job_state fixtures), and each mistake an author can make.

In process, on the ``jobs-lab`` testbed challenge; the guarantees across processes (kills,
SIGTERM, leases) are tested through ``serve`` in tests/test_jobs_serve.py.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import run_cli
from sqlalchemy import select

from base_runner import database, jobs


@pytest.fixture
def challenge_slug() -> str:
    return "jobs-lab"


async def submit(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    answer = await client.post("/lab/submissions", json={"hotkey": "5Miner", **body})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_run_jobs_runs_every_queued_job_to_its_end_with_time_moved_forward(
    challenge_client: httpx.AsyncClient, master_client: httpx.AsyncClient, run_jobs: Any, job_state: Any
) -> None:
    ok = await submit(challenge_client, hotkey="5Good")
    failing = await submit(challenge_client, hotkey="5Bad", behaviour="fail")
    tomorrow = await submit(challenge_client, hotkey="5Later", delay=86400)
    # Under the fixtures nothing runs in the background: the test decides when.
    assert (await job_state(ok["job_id"])).state == "queued"
    ran = await run_jobs()
    assert {job.id: (job.state, job.attempts) for job in ran} == {
        ok["job_id"]: ("succeeded", 1),
        failing["job_id"]: ("dead", 3),  # its retries' backoff passed without a wait
        tomorrow["job_id"]: ("succeeded", 1),
    }
    dead = await job_state(failing["job_id"])
    assert dead.error == f"RuntimeError: the judge failed on submission {failing['submission_id']}"
    assert dead.args == {"submission_id": failing["submission_id"]}
    weights = (await master_client.get("/internal/v1/get_weights")).json()["weights"]
    assert weights == {"5Good": 1.0 + ok["submission_id"], "5Later": 1.0 + tomorrow["submission_id"]}
    assert await run_jobs() == []


async def test_enqueue_refuses_what_it_cannot_run_naming_the_task(
    challenge_client: httpx.AsyncClient, job_state: Any
) -> None:
    from runner_testbed import jobs_lab

    @jobs.task
    async def stranger(job: jobs.Job) -> None:
        pass

    async with database.session() as session:
        with pytest.raises(
            jobs.TaskError,
            match=r"^task stranger is not registered: return it from the "
            r"register_tasks hook \(registered: evaluate, serial\)$",
        ):
            await jobs.enqueue(session, stranger)
        with pytest.raises(jobs.TaskError, match=r"^task evaluate: argument submission_id is not JSON \(a set;"):
            await jobs.enqueue(session, jobs_lab.evaluate, submission_id={1})
        with pytest.raises(jobs.TaskError, match=r"^task evaluate: argument submission_id is not JSON \(the key 1"):
            await jobs.enqueue(session, jobs_lab.evaluate, submission_id={1: 2})
        with pytest.raises(jobs.TaskError, match=r"^task evaluate: missing a required argument: 'submission_id'"):
            await jobs.enqueue(session, jobs_lab.evaluate)
        with pytest.raises(jobs.TaskError, match=r"^task evaluate: got an unexpected keyword argument 'hotkey'"):
            await jobs.enqueue(session, jobs_lab.evaluate, submission_id=1, hotkey="5Miner")
        with pytest.raises(jobs.TaskError, match=r"delay must be a number of seconds >= 0, got -1"):
            await jobs.enqueue(session, jobs_lab.evaluate, submission_id=1, delay=-1)
    async with database.session(readonly=True) as session:
        with pytest.raises(jobs.TaskError, match=r"pass a write session"):
            await jobs.enqueue(session, jobs_lab.evaluate, submission_id=1)
    # Nothing of the refused calls was written.
    async with database.read_engine.connect() as conn:
        assert (await conn.execute(select(1).select_from(_jobs_table()))).first() is None


def _jobs_table() -> Any:
    from base_runner._jobs.table import jobs as table

    return table


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: jobs.task(lambda job: None), "<lambda> is not async def"),
        (lambda: jobs.task(_sync), "task _sync is not async def: write it as `async def _sync(job, ...)`"),
        (lambda: jobs.task(_no_job), "task _no_job must take the job as its first parameter"),
        (lambda: jobs.task(_clash), "task _clash: parameter key clashes with enqueue's own key=; rename it"),
        (lambda: jobs.task(max_attempts=0)(_fine), "task _fine: max_attempts must be at least 1, got 0"),
        (lambda: jobs.task(concurrency=0)(_fine), "task _fine: concurrency must be at least 1 or None, got 0"),
        (lambda: jobs.task(timeout=0)(_fine), "task _fine: timeout must be a positive number of seconds or None"),
    ],
)
def test_a_task_written_wrong_is_refused_where_it_is_declared(make: Any, message: str) -> None:
    with pytest.raises(jobs.TaskError) as refused:
        make()
    assert message in str(refused.value)


def _sync(job: jobs.Job) -> None:
    pass


async def _no_job(*, submission_id: int) -> None:
    pass


async def _clash(job: jobs.Job, key: str) -> None:
    pass


async def _fine(job: jobs.Job) -> None:
    pass


def test_a_registered_task_that_is_not_one_stops_serve_with_one_line(sites: dict[str, Path], tmp_path: Path) -> None:
    result = run_cli("serve", "--challenge", "bad-tasks", "--data-dir", str(tmp_path), sites=[sites["testbed"]])
    assert result.returncode == 3
    assert result.stderr.strip().splitlines()[-1] == (
        "base-runner: error: challenge bad-tasks (runner-testbed 2.5.0): register_tasks: evaluate is not a task: "
        "decorate it with @jobs.task (from base_runner import jobs)"
    )
    assert "Traceback" not in result.stderr


@pytest.fixture
def older_table(challenge_settings: Any) -> None:
    """The jobs table as an older runner left it: without its progress columns, and one job in it."""
    with sqlite3.connect(challenge_settings.data_dir / "challenge.sqlite3") as conn:
        conn.execute(
            "CREATE TABLE base_runner_jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, task TEXT NOT NULL, "
            "args TEXT NOT NULL, key TEXT, state TEXT NOT NULL, priority INTEGER DEFAULT 0 NOT NULL, "
            "run_at FLOAT NOT NULL, attempts INTEGER DEFAULT 0 NOT NULL, lease_token TEXT, lease_expires FLOAT, "
            "enqueued_at FLOAT NOT NULL, started_at FLOAT, finished_at FLOAT, error TEXT, traceback TEXT, "
            "correlation_id TEXT)"
        )
        conn.execute(
            "INSERT INTO base_runner_jobs (task, args, state, run_at, enqueued_at) "
            "VALUES ('serial', '{\"number\": 1}', 'queued', 0, 0)"
        )
    conn.close()


async def test_the_runner_evolves_its_jobs_table_and_never_reports_it_as_drift(
    older_table: None, master_client: httpx.AsyncClient, challenge_settings: Any, run_jobs: Any
) -> None:
    status = (await master_client.get("/internal/status")).json()
    assert status["checks"]["schema"]["status"] == "ok"
    assert status["checks"]["jobs"] == {
        "status": "ok",
        "required": True,
        "reasons": [],
        "queue": {"serial": {"queued": 1}},
        "oldest_due_seconds": {"serial": pytest.approx(status["checks"]["jobs"]["oldest_due_seconds"]["serial"])},
    }
    with sqlite3.connect(challenge_settings.data_dir / "challenge.sqlite3") as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(base_runner_jobs)")}
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(base_runner_jobs)")}
    conn.close()
    assert {"progress", "message"} <= columns
    assert {"ix_base_runner_jobs_due", "ux_base_runner_jobs_live_key"} <= indexes
    (ran,) = await run_jobs()
    assert (ran.task, ran.state, ran.args) == ("serial", "succeeded", {"number": 1})
    metrics = (await master_client.get("/internal/v1/metrics")).text
    assert 'base_runner_jobs_started_total{task="serial"} 1.0' in metrics
    assert 'base_runner_jobs_succeeded_total{task="serial"} 1.0' in metrics
    assert 'base_runner_job_attempt_duration_seconds_count{outcome="succeeded",task="serial"} 1.0' in metrics
    assert 'base_runner_jobs_oldest_due_seconds{task="evaluate"} 0.0' in metrics


async def test_an_attempt_whose_job_was_taken_over_can_write_nothing(
    challenge_client: httpx.AsyncClient, run_jobs: Any, job_state: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from runner_testbed import jobs_lab

    jobs_lab.LOST.clear()
    stolen = await submit(challenge_client, behaviour="stolen")
    assert await run_jobs() == [await job_state(stolen["job_id"])]
    # Its progress and its result were refused: the job stays the other runner's, unscored.
    (refused,) = jobs_lab.LOST
    assert refused == f"job {stolen['job_id']}: this attempt no longer holds the job (its lease was taken over)"
    held = await job_state(stolen["job_id"])
    assert (held.state, held.attempts, held.progress, held.error) == ("running", 1, None, None)
    async with database.session(readonly=True) as session:
        assert (await session.get(jobs_lab.LabSubmission, stolen["submission_id"])).score is None
    (line,) = [r for r in caplog.records if r.name == "base_runner.jobs" and "attempt 1/3 lost" in r.getMessage()]
    assert "LeaseLost" in line.getMessage()


async def test_due_jobs_run_by_priority_then_by_how_long_they_have_been_due(run_jobs: Any) -> None:
    from runner_testbed import jobs_lab

    async with database.session() as session:
        ids = {
            name: await jobs.enqueue(session, jobs_lab.serial, number=number, priority=priority, delay=delay)
            for name, number, priority, delay in [
                ("low, due first", 1, 0, None),
                ("high", 2, 5, None),
                ("low, due later", 3, 0, None),
                ("highest, not due yet", 4, 9, 30),
            ]
        }
        await session.commit()
    ran = [job.id for job in await run_jobs()]
    # The delayed one runs last, for all its priority: the clock only moves to it once nothing else is due.
    assert ran == [ids["high"], ids["low, due first"], ids["low, due later"], ids["highest, not due yet"]]
