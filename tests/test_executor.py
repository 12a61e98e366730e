"""The executor against a real Docker engine: the sandbox's rules, limits, timeouts, cancellation and stale containers.

One private engine serves the session (conftest's ``docker_engine``); the image is
Debian's static busybox imported from a tarball, so nothing is pulled or built.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from broker_double import BrokerDouble
from conftest import SERVE_TOKEN, start_server
from image_helpers import BUSYBOX, Engine, busybox_image

from base_runner import RunnerSettings, executor
from base_runner._executor.local import LocalDocker
from base_runner._executor.service import Executor
from base_runner._executor.setup import build
from base_runner.testing import ExecutorRecorder, RecordedRun

if TYPE_CHECKING:
    from fastapi import FastAPI


SLUG = "exec-test"
#: The image the tests import, which the testbed's sandbox challenge runs by default.
IMAGE = "localhost/executor-busybox:1"


@pytest.fixture
def challenge_slug() -> str:
    return "sandbox"


@pytest.fixture(scope="module")
def image(docker_engine: Engine) -> Iterator[str]:
    if not BUSYBOX.exists():
        pytest.skip("needs Debian's busybox-static (.ci/install-image-tools installs it)")
    name = busybox_image(docker_engine, IMAGE)
    yield name
    docker_engine.docker("image", "rm", "--force", name, check=False)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


def containers(engine: Engine, slug: str = SLUG, prefix: str = "base") -> list[str]:
    return engine.docker("ps", "-aq", "--filter", f"label={prefix}.challenge={slug}").stdout.split()


def make(engine: Engine, data_dir: Path, image: str, slug: str = SLUG) -> Executor:
    return Executor(LocalDocker(engine.env), slug=slug, data_dir=data_dir, allowed_images=[image])


def run(engine: Engine, data_dir: Path, image: str, spec: executor.RunSpec, timeout: float = 60) -> executor.RunResult:
    async def go() -> executor.RunResult:
        runner = make(engine, data_dir, image)
        try:
            return await runner.run(spec, timeout)
        finally:
            await runner.backend.close()

    return asyncio.run(go())


def test_a_run_reads_a_read_only_mount_and_its_writable_mount_comes_back(
    docker_engine: Engine, image: str, data_dir: Path
) -> None:
    (data_dir / "submission").mkdir()
    (data_dir / "submission" / "answer.txt").write_text("42\n")
    (data_dir / "out").mkdir(mode=0o777)
    script = "cat /work/answer.txt; echo scored > /out/score.txt; touch /work/x 2>/dev/null || echo read-only mount >&2"
    spec = executor.RunSpec(
        image=image,
        command=("sh", "-c", script),
        mounts=(executor.Mount("submission", "/work"), executor.Mount(data_dir / "out", "/out", read_only=False)),
    )
    result = run(docker_engine, data_dir, image, spec)
    assert (result.returncode, result.timed_out) == (0, False), result
    assert result.stdout == "42\n"
    assert "read-only mount" in result.stderr
    assert (data_dir / "out" / "score.txt").read_text() == "scored\n"
    assert not (data_dir / "submission" / "x").exists()
    assert containers(docker_engine) == []


def test_the_sandbox_holds(docker_engine: Engine, image: str, data_dir: Path) -> None:
    # Interfaces other than lo, a write to the root filesystem, an exec from /tmp: each prints if allowed.
    script = textwrap.dedent(
        """
        tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | grep -v '^lo$' | sed 's/^/interface /'
        touch /rootfs-write 2>/dev/null && echo root writable
        cp /bin/busybox /tmp/b 2>/dev/null && /tmp/b true 2>/dev/null && echo tmp executable
        echo done
        """
    )
    result = run(docker_engine, data_dir, image, executor.RunSpec(image=image, command=("sh", "-c", script)))
    assert result.stdout == "done\n", result


def test_memory_over_the_limit_is_killed(docker_engine: Engine, image: str, data_dir: Path) -> None:
    grow = 'x=$(head -c 64000000 /dev/zero | tr "\\0" a); echo survived'
    spec = executor.RunSpec(
        image=image, command=("sh", "-c", grow), limits=executor.Limits(memory="16m", memory_swap="16m")
    )
    result = run(docker_engine, data_dir, image, spec)
    assert result.returncode == 137 and "survived" not in result.stdout, result


def test_output_keeps_its_last_64_kb(docker_engine: Engine, image: str, data_dir: Path) -> None:
    spec = executor.RunSpec(image=image, command=("sh", "-c", "seq 1 100000; echo the-end"))
    result = run(docker_engine, data_dir, image, spec)
    assert len(result.stdout.encode()) == 64_000
    assert result.stdout.endswith("99999\n100000\nthe-end\n")


def test_a_timeout_answers_124_and_leaves_no_container(docker_engine: Engine, image: str, data_dir: Path) -> None:
    spec = executor.RunSpec(image=image, command=("sh", "-c", "echo begun; sleep 60"))
    result = run(docker_engine, data_dir, image, spec, timeout=2)
    assert (result.returncode, result.timed_out) == (124, True)
    assert result.stdout == "begun\n"
    assert containers(docker_engine) == []


def test_a_cancelled_run_leaves_no_container(docker_engine: Engine, image: str, data_dir: Path) -> None:
    async def go() -> None:
        runner = make(docker_engine, data_dir, image)
        task = asyncio.create_task(runner.run(executor.RunSpec(image=image, command=("sleep", "60")), 120))
        while not containers(docker_engine):
            await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert runner.counts.finished["cancelled"] == 1
        await runner.backend.close()

    asyncio.run(go())
    assert containers(docker_engine) == []


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"image": "localhost/other:1"}, "not allowed"),
        ({"limits": executor.Limits(network="bridge")}, "network 'bridge' is refused"),
        ({"limits": executor.Limits(network="host")}, "network 'host' is refused"),
        ({"limits": executor.Limits(privileged=True)}, "privileged"),
        ({"limits": executor.Limits(read_only=False)}, "read-only root"),
        ({"limits": executor.Limits(cap_drop=("NET_RAW",))}, "capability"),
        ({"mounts": (executor.Mount("../outside", "/x"),)}, "outside the data dir"),
        ({"mounts": (executor.Mount("/etc", "/x"),)}, "outside the data dir"),
        ({"mounts": (executor.Mount("link", "/x"),)}, "outside the data dir"),
        ({"mounts": (executor.Mount("challenge.sqlite3", "/x"),)}, "database"),
        ({"labels": {"base.challenge": "other"}}, "labels under 'base.' and 'platform.'"),
    ],
)
def test_a_spec_that_breaks_a_rule_is_refused_before_any_call(
    data_dir: Path, change: dict[str, object], says: str
) -> None:
    image = IMAGE
    (data_dir.parent / "outside").mkdir()
    (data_dir / "link").symlink_to(data_dir.parent / "outside")
    (data_dir / "challenge.sqlite3").write_text("")
    spec = executor.RunSpec(**{"image": image, "command": ("true",), **change})  # type: ignore[arg-type]

    async def go() -> None:
        runner = Executor(
            LocalDocker({"DOCKER_HOST": "unix:///nonexistent.sock"}),  # any call would fail with another error
            slug=SLUG,
            data_dir=data_dir,
            allowed_images=[image],
            protected=[data_dir / "challenge.sqlite3"],
        )
        with pytest.raises(executor.RunRefused, match=says):
            await runner.run(spec, 10)
        assert runner.counts.finished["refused"] == 1
        await runner.backend.close()

    asyncio.run(go())


def test_no_engine_is_a_clear_error_naming_the_settings(data_dir: Path) -> None:
    async def go() -> None:
        runner = Executor(
            LocalDocker({"DOCKER_HOST": f"unix://{data_dir}/none.sock"}),
            slug=SLUG,
            data_dir=data_dir,
            allowed_images=["img"],
        )
        with pytest.raises(executor.BackendUnavailable, match="CHALLENGE_DOCKER_BROKER_URL.*DOCKER_HOST"):
            await runner.run(executor.RunSpec(image="img", command=("true",)), 10)
        assert runner.counts.finished["backend_error"] == 1
        assert "DOCKER_HOST" in (await runner.problem() or "")
        await runner.backend.close()

    asyncio.run(go())


KILLED_DURING_A_RUN = """
import asyncio, sys
from pathlib import Path
from base_runner import RunnerSettings, executor
from base_runner._executor.local import LocalDocker
from base_runner._executor.service import Executor
from base_runner._executor.setup import build
from base_runner.testing import ExecutorRecorder, RecordedRun

async def main():
    runner = Executor(LocalDocker({"DOCKER_HOST": sys.argv[1]}), slug=sys.argv[2], data_dir=Path(sys.argv[3]),
                      allowed_images=[sys.argv[4]])
    await runner.run(executor.RunSpec(image=sys.argv[4], command=("sleep", "300")), 600)

asyncio.run(main())
"""


def test_a_container_left_by_a_killed_process_is_removed_at_the_next_start(
    docker_engine: Engine, image: str, data_dir: Path
) -> None:
    other = "exec-test-other"
    args = [docker_engine.env["DOCKER_HOST"], data_dir, image]
    mine = subprocess.Popen([sys.executable, "-c", KILLED_DURING_A_RUN, args[0], SLUG, *map(str, args[1:])])
    theirs = subprocess.Popen([sys.executable, "-c", KILLED_DURING_A_RUN, args[0], other, *map(str, args[1:])])
    try:
        while not (containers(docker_engine) and containers(docker_engine, other)):
            assert mine.poll() is None and theirs.poll() is None
        for process in (mine, theirs):
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        assert len(containers(docker_engine)) == 1

        async def restart() -> int:
            runner = make(docker_engine, data_dir, image)
            try:
                return await runner.remove_stale()
            finally:
                await runner.backend.close()

        assert asyncio.run(restart()) == 1
        assert containers(docker_engine) == []
        assert len(containers(docker_engine, other)) == 1, "another challenge's container is not this one's to remove"
    finally:
        for process in (mine, theirs):
            if process.poll() is None:
                process.kill()
                process.wait()
        for container in containers(docker_engine, other) + containers(docker_engine):
            docker_engine.docker("rm", "--force", container, check=False)


# -- through the master's broker ---------------------------------------------------------------------

BROKER_TOKEN = "broker-token-for-the-executor-test"


@pytest.fixture(params=["base", "platform"])
def broker(request: pytest.FixtureRequest, docker_engine: Engine, image: str) -> Iterator[BrokerDouble]:
    double = BrokerDouble(docker_engine.env, {SLUG: BROKER_TOKEN}, (image,), flavor=request.param).start()
    yield double
    double.stop()


def through(broker: BrokerDouble, data_dir: Path, image: str, token: str = BROKER_TOKEN) -> Executor:
    token_file = data_dir.parent / "broker_token"
    token_file.write_text(f"{token}\n")
    settings = RunnerSettings(
        data_dir=data_dir,
        executor_allowed_images=(image,),
        docker_broker_url=broker.url,
        docker_broker_token_file=token_file,
    )
    return build(settings, SLUG)


def test_the_same_run_goes_through_either_masters_broker(
    broker: BrokerDouble, image: str, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (data_dir / "submission").mkdir()
    (data_dir / "submission" / "answer.txt").write_text("42\n")
    (data_dir / "out").mkdir()
    spec = executor.RunSpec(
        image=image,
        command=("sh", "-c", "cat /work/answer.txt; echo scored > /out/score.txt"),
        mounts=(executor.Mount("submission", "/work"), executor.Mount("out", "/out", read_only=False)),
    )

    async def go(spec: executor.RunSpec) -> executor.RunResult:
        runner = through(broker, data_dir, image)
        try:
            return await runner.run(spec, 60)
        finally:
            await runner.backend.close()

    # A CPU job runs on the broker's node in a folder the broker deletes: its writable mount never comes back.
    result = asyncio.run(go(spec))
    assert (result.returncode, result.timed_out, result.stdout) == (0, False, "42\n"), result
    assert not (data_dir / "out" / "score.txt").exists()
    assert "sent back nothing of the writable mount /out" in caplog.text and "result.stdout" in caplog.text
    # A GPU job runs on another node, and the broker drains its writable mounts back through stdout.
    result = asyncio.run(go(dataclasses.replace(spec, limits=executor.Limits(gpu_count=1))))
    assert (result.returncode, result.timed_out, result.stdout) == (0, False, "42\n"), result
    assert (data_dir / "out" / "score.txt").read_text() == "scored\n"
    run = [r for r in broker.requests if r.path == "/v1/docker/run" and broker.header.lower() in r.headers][-1]
    assert run.headers["authorization"] == f"Bearer {BROKER_TOKEN}"
    assert run.headers[broker.header.lower()] == SLUG
    prefix = broker.prefix
    assert run.body["labels"][f"{prefix}.challenge"] == SLUG and f"{prefix}.runner" in run.body["labels"]
    assert [m["read_only"] for m in run.body["mounts"]] == [True, False]
    assert BROKER_TOKEN not in caplog.text


@pytest.mark.parametrize(("status", "says"), [(401, "refused the token"), (429, "concurrency limit")])
def test_a_broker_refusal_is_a_clear_error(
    broker: BrokerDouble, image: str, data_dir: Path, status: int, says: str
) -> None:
    broker.refuse_next(status, "docker_quota_exceeded: 2 of 2" if status == 429 else "invalid broker token")

    async def go() -> None:
        runner = through(broker, data_dir, image)
        with pytest.raises(executor.BackendError, match=says):
            await runner.run(executor.RunSpec(image=image, command=("true",)), 30)
        assert runner.counts.finished["backend_error"] == 1
        await runner.backend.close()

    asyncio.run(go())


def test_a_wrong_broker_token_is_refused_and_never_shown(
    broker: BrokerDouble, image: str, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> str:
        runner = through(broker, data_dir, image, token="a-wrong-token-value")
        try:
            with pytest.raises(executor.BackendError) as raised:
                await runner.run(executor.RunSpec(image=image, command=("true",)), 30)
            return str(raised.value)
        finally:
            await runner.backend.close()

    message = asyncio.run(go())
    assert "CHALLENGE_DOCKER_BROKER_TOKEN_FILE" in message
    assert "a-wrong-token-value" not in message + caplog.text


def test_a_cancelled_broker_run_is_cleaned_up(
    broker: BrokerDouble, docker_engine: Engine, image: str, data_dir: Path
) -> None:
    async def go() -> None:
        runner = through(broker, data_dir, image)
        task = asyncio.create_task(runner.run(executor.RunSpec(image=image, command=("sleep", "60")), 120))
        while not containers(docker_engine, SLUG, broker.prefix):
            await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await runner.backend.close()

    asyncio.run(go())
    assert any(r.path == "/v1/docker/cleanup" for r in broker.requests)
    assert containers(docker_engine, SLUG, broker.prefix) == []


# -- the authors' recorder -------------------------------------------------------------------------


async def test_the_recorder_stands_in_for_docker_in_a_challenges_tests(
    executor_recorder: ExecutorRecorder, challenge_client: httpx.AsyncClient, challenge_app: FastAPI
) -> None:
    def container(run: RecordedRun) -> executor.RunResult:
        (run.mounts["/out"] / "score.txt").write_text("0.75")  # what the container would write
        return executor.RunResult(0, "scored\n", "")

    executor_recorder.allowed_images = (IMAGE,)
    executor_recorder.reply(container)
    answer = await challenge_client.post("/evaluate", json={"hotkey": "5Miner", "answer": "0.75"})
    assert answer.json() == {"returncode": 0, "stdout": "scored\n", "score": 0.75}, answer.text
    (run,) = executor_recorder.runs
    assert run.spec.image == IMAGE and run.mounts["/work"].name == "5Miner"
    assert run.labels["base.challenge"] == "sandbox"

    executor_recorder.allowed_images = ()
    refused = await challenge_client.post("/evaluate", json={"hotkey": "5Miner", "answer": "1"})
    assert refused.status_code == 500 and len(executor_recorder.runs) == 1, "the rules hold under the recorder too"


# -- in a real serve process -------------------------------------------------------------------------


def test_a_job_runs_its_container_without_stalling_health_and_no_stop_leaves_one_behind(
    docker_engine: Engine, image: str, sites: dict[str, Path], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env = {
        "BASE_CHALLENGE_SLUG": "sandbox",
        "DOCKER_HOST": docker_engine.env["DOCKER_HOST"],
        "CHALLENGE_EXECUTOR_ALLOWED_IMAGES": image,
    }
    args = ["--data-dir", str(data)]
    master = {"Authorization": f"Bearer {SERVE_TOKEN}", "X-Base-Challenge-Slug": "sandbox"}
    served = start_server(args, [sites["testbed"]], tmp_path / "first.log", **env)

    def running_container(client: httpx.Client, job: str) -> dict[str, str]:
        while True:
            for found in containers(docker_engine, "sandbox"):
                shown = docker_engine.docker("inspect", "--format", "{{json .Config.Labels}}", found, check=False)
                labels = json.loads(shown.stdout or "{}")
                if labels.get("base.job") == job:
                    return {"id": found, **labels}
            assert client.get(f"/internal/v1/jobs/{job}", headers=master).json()["state"] in ("queued", "running")
            time.sleep(0.1)

    try:
        with served.client() as client:
            assert "docker_executor" in client.get("/version").json()["capabilities"]
            job = client.post("/submit", json={"hotkey": "5Miner", "answer": "1", "think": 60}).json()["job_id"]
            container = running_container(client, job)
            assert (container["base.attempt"], container["base.task"]) == ("1", "judge")
            # The run holds no thread of the loop: every probe answers at once while the container runs.
            for _ in range(5):
                assert client.get("/health", timeout=2).status_code == 200
            status = client.get("/internal/status").json()["checks"]["executor"]
            assert status["status"] == "ok" and status["required"] is False
            assert status["backend"] == "docker" and status["runs"]["running"] == 1
            cancelled = client.post(f"/internal/v1/jobs/{job}/cancel", headers=master)
            assert cancelled.json()["state"] == "cancelled", cancelled.text
            assert containers(docker_engine, "sandbox") == [], "cancelling the job removed its container"
            metrics = client.get("/internal/v1/metrics", headers=master).text
            for line in (
                "base_runner_executor_runs_started_total 1.0",
                "base_runner_executor_runs_running 0.0",
                'base_runner_executor_runs_finished_total{outcome="cancelled"} 1.0',
                'base_runner_executor_run_duration_seconds_count{outcome="cancelled"} 1.0',
            ):
                assert line in metrics.splitlines(), line

            job = client.post("/submit", json={"hotkey": "5Miner", "answer": "1", "think": 60}).json()["job_id"]
            left = running_container(client, job)["id"]
        served.stop(signal.SIGKILL)
        assert containers(docker_engine, "sandbox") == [left], "a killed runner cannot remove its container"
        served = start_server(args, [sites["testbed"]], tmp_path / "second.log", **env)
        deadline = time.monotonic() + 30
        while left in containers(docker_engine, "sandbox"):
            assert time.monotonic() < deadline, "the next start did not remove the killed runner's container"
            time.sleep(0.1)
        with served.client() as client:
            assert running_container(client, job)["base.attempt"] == "2", "its job runs again"
        assert served.stop() == 0
        assert containers(docker_engine, "sandbox") == [], "SIGTERM put the job back and removed its container"
    finally:
        served.stop(signal.SIGKILL)
        for container in containers(docker_engine, "sandbox"):
            docker_engine.docker("rm", "--force", container, check=False)


async def test_the_recorder_answers_a_jobs_runs_and_sees_its_labels(
    executor_recorder: ExecutorRecorder, challenge_client: httpx.AsyncClient, run_jobs: Any
) -> None:
    executor_recorder.allowed_images = (IMAGE,)

    def container(run: RecordedRun) -> executor.RunResult:
        (run.mounts["/out"] / "score.txt").write_text("1")
        return executor.RunResult(0, "scored\n", "")

    executor_recorder.reply(container)
    job_id = (await challenge_client.post("/submit", json={"hotkey": "5Miner", "answer": "1"})).json()["job_id"]
    (job,) = await run_jobs()
    assert job.state == "succeeded"
    (run,) = executor_recorder.runs
    assert (run.labels["base.job"], run.labels["base.attempt"], run.labels["base.task"]) == (job_id, "1", "judge")


KILLED_DURING_A_BROKER_RUN = """
import asyncio, sys
from pathlib import Path
from base_runner import RunnerSettings, executor
from base_runner._executor.setup import build
from base_runner.testing import ExecutorRecorder, RecordedRun

async def main():
    settings = RunnerSettings(data_dir=Path(sys.argv[1]), executor_allowed_images=(sys.argv[2],),
                              docker_broker_url=sys.argv[3], docker_broker_token_file=Path(sys.argv[4]))
    await build(settings, sys.argv[5]).run(executor.RunSpec(image=sys.argv[2], command=("sleep", "300")), 600)

asyncio.run(main())
"""


def test_a_killed_runners_broker_container_is_removed_through_the_broker_at_the_next_start(
    broker: BrokerDouble, docker_engine: Engine, image: str, data_dir: Path
) -> None:
    runner = through(broker, data_dir, image)  # writes the token file the killed process reads
    token_file = str(data_dir.parent / "broker_token")
    args = [str(data_dir), image, broker.url, token_file, SLUG]
    process = subprocess.Popen([sys.executable, "-c", KILLED_DURING_A_BROKER_RUN, *args])
    try:
        while not containers(docker_engine, SLUG, broker.prefix):
            assert process.poll() is None
            time.sleep(0.1)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()

        async def restart() -> int:
            try:
                return await runner.remove_stale()
            finally:
                await runner.backend.close()

        assert asyncio.run(restart()) == 1
        assert containers(docker_engine, SLUG, broker.prefix) == []
        assert any(r.path == "/v1/docker/cleanup" for r in broker.requests), "the broker removed it, not the test"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.anyio
async def test_an_unreachable_broker_degrades_the_runner_and_a_local_engine_counts_once_used(
    tmp_path: Path, data_dir: Path
) -> None:
    import runner_testbed.sandbox  # noqa: F401 - a challenge that uses the executor

    from base_runner._core.runtime import Runtime
    from base_runner._executor.part import ExecutorPart

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    behind_a_broker = RunnerSettings(data_dir=data_dir, docker_broker_url=url)
    on_a_laptop = RunnerSettings(data_dir=data_dir)
    for settings, shown in ((behind_a_broker, True), (on_a_laptop, False)):
        runtime = Runtime("sandbox")
        runtime.started = True
        part = ExecutorPart(settings, "sandbox", "runner_testbed.sandbox:plugin", runtime)
        async with part.running():
            for _ in range(100 if shown else 10):  # the broker's first probe fails at once; the engine's never shows
                if "executor" in runtime.details:
                    break
                await asyncio.sleep(0.05)
        checks = {c["name"]: c for c in runtime.checks()}
        if shown:
            assert checks["executor"] == {"name": "executor", "status": "degraded", "required": False}
            assert runtime.ready, "an optional check never makes the runner unready"
            (reason,) = runtime.failing("executor")
            assert f"the Docker broker at {url} does not answer" in reason
            assert runtime.details["executor"]["backend"] == "broker"
        else:
            assert "executor" not in checks, "a challenge that has not run anything is not degraded by Docker"
