"""The runner image, built from the real Dockerfiles and run on a real single-node Swarm, as BASE deploys it.

The test makes the session's Docker engine (conftest's ``docker_engine``, see image_helpers) the
manager of a Swarm, builds the runner image from ``Dockerfile``, the example challenge as version
1.2.0 with ``examples/challenge.Dockerfile`` and as 1.2.1 with the
``CHALLENGE_PACKAGES`` build argument, under the slug ``bounty-hunt`` that
docs/operating.md uses, and then runs the blocks of docs/operating.md marked
for it, as written: a local image stands in for ``ghcr.io/...``. A master-like
client (tests/swarm_master.py) in a container of its own on the challenge
network reaches the service by its name, as the master does.

On 2 cores the module takes about 4.5 minutes when debootstrap's tarball is
cached, about 7 from a clean machine (debootstrap, then every build's pip
downloads); most of the rest is waiting for health checks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from image_helpers import DOCKER, DOCKERD, DieEvents, Engine, base_image, build

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "operating.md"
MISSING = [tool for tool in (DOCKER, DOCKERD) if not os.access(tool, os.X_OK)]
MISSING += [tool for tool in ("debootstrap",) if shutil.which(tool) is None]
pytestmark = pytest.mark.skipif(
    bool(MISSING) or os.geteuid() != 0,
    reason=f"needs root and {', '.join(MISSING) or 'nothing else'} (.ci/install-image-tools installs them)",
)

#: The documents' example: the test's challenge is the example plugin under this slug.
SLUG = "bounty-hunt"
SERVICE = f"challenge-{SLUG}"
VOLUME = "base_bounty_hunt_sqlite"
NETWORK = "base_challenges"
SECRETS = ("base_bounty_hunt_challenge_token", "base_gateway_token")
FIRST, SECOND = "1.2.0", "1.2.1"
#: What the documents deploy; each command gets one of the test's images in its place.
DOC_IMAGE = "ghcr.io/<owner>/bounty-hunt@sha256:<digest>"
TOKEN = "token-for-the-image-test"
MASTER = {"Authorization": f"Bearer {TOKEN}", "X-Base-Challenge-Slug": SLUG}
#: Every task has stopped by the time a later one is healthy; 60 s covers a cold start on 2 busy cores.
HEALTHY_WITHIN = 150


def doc_block(name: str) -> str:
    """The ``sh`` block of docs/operating.md marked ``tests/test_image.py runs this block: <name>``."""
    pattern = rf"<!-- tests/test_image.py runs this block: {re.escape(name)} -->\n( *)```sh\n(.*?)\n *```"
    found = re.findall(pattern, DOC.read_text(), re.DOTALL)
    assert len(found) == 1, f"docs/operating.md has {len(found)} blocks marked {name!r}"
    return textwrap.dedent(found[0][0] + found[0][1])


def doc_commands(name: str, image: str | None = None) -> list[str]:
    """The block's commands, one string each, with ``image`` for the documents' image."""
    block = doc_block(name)
    if image is not None:
        assert DOC_IMAGE in block, f"the {name!r} block no longer deploys {DOC_IMAGE}"
        block = block.replace(DOC_IMAGE, image)
    return [command for command in re.split(r"(?<!\\)\n", block) if command.strip()]


def _wheel(project: Path, into: Path) -> Path:
    """The project's wheel, built from a copy: setuptools writes its build files next to the sources."""
    copy = into / "source"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "dist"))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet"]
    subprocess.run([*command, str(copy), "-w", str(into)], check=True, timeout=300)
    shutil.rmtree(copy)
    (wheel,) = into.glob("*.whl")
    return wheel


def _challenge_wheel(version: str, into: Path) -> Path:
    """The example challenge as ``version``, under the documents' slug: its entry point's name."""
    project = into / "project"
    shutil.copytree(REPO / "plugins" / "example", project, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    metadata = (project / "pyproject.toml").read_text()
    renamed = metadata.replace('version = "0.1.0"', f'version = "{version}"')
    renamed = renamed.replace('example = "example_challenge.plugin"', f'{SLUG} = "example_challenge.plugin"')
    assert renamed.count(version) == 1 and SLUG in renamed, "plugins/example/pyproject.toml changed its form"
    (project / "pyproject.toml").write_text(renamed)
    wheel = _wheel(project, into / "dist")
    shutil.rmtree(project)
    return wheel


@dataclass(frozen=True)
class Images:
    runner: str
    #: The challenge at FIRST, made with examples/challenge.Dockerfile.
    first: str
    #: The challenge at SECOND, made with the runner's Dockerfile and CHALLENGE_PACKAGES.
    second: str


@pytest.fixture(scope="module")
def docker(docker_engine: Engine) -> Iterator[Engine]:
    """The session's engine (conftest's ``docker_engine``), made manager of a single-node Swarm on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    docker_engine.docker("swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", f"127.0.0.1:{port}")
    try:
        yield docker_engine
    finally:
        docker_engine.docker("swarm", "leave", "--force", check=False, timeout=60)


@pytest.fixture(scope="module")
def images(docker: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    made = Images("localhost/base-runner:test", f"localhost/{SLUG}:{FIRST}", f"localhost/{SLUG}:{SECOND}")
    try:
        build(docker, REPO, made.runner, REPO / "Dockerfile", {"BASE_IMAGE": base_image(docker)})
        project = tmp_path_factory.mktemp("challenge")
        _challenge_wheel(FIRST, project)
        build(docker, project, made.first, REPO / "examples" / "challenge.Dockerfile", {"RUNNER_IMAGE": made.runner})
        second = tmp_path_factory.mktemp("second")
        _build_with_challenge_packages(docker, made.second, _challenge_wheel(SECOND, second), second)
        yield made
    finally:
        docker.docker("image", "rm", "--force", *vars(made).values(), check=False)


def _build_with_challenge_packages(docker: Engine, tag: str, wheel: Path, into: Path) -> None:
    """The runner and a challenge in one build, as docs/operating.md tells it: the wheel under wheels/.

    In a copy of the checkout: a wheels/ folder in the checkout itself would come and go under the
    tests that copy or install the checkout while this one runs beside them (pytest -n).
    """
    checkout = into / "checkout"
    untracked = (".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", ".*cache", "wheels")
    shutil.copytree(REPO, checkout, ignore=shutil.ignore_patterns(*untracked))
    (checkout / "wheels").mkdir()
    shutil.copy(wheel, checkout / "wheels")
    args = {"BASE_IMAGE": base_image(docker), "CHALLENGE_PACKAGES": f"wheels/{wheel.name}"}
    build(docker, checkout, tag, checkout / "Dockerfile", args)


@pytest.fixture(scope="module")
def died(docker: Engine) -> Iterator[DieEvents]:
    events = DieEvents(docker)
    try:
        yield events
    finally:
        events.close()


@pytest.fixture
def swarm_objects(docker: Engine) -> Iterator[None]:
    """Removes what the documents' blocks create, whatever the test got to."""
    try:
        yield
    finally:
        docker.docker("service", "rm", SERVICE, check=False)
        _wait_until_unused(docker)
        docker.docker("secret", "rm", *SECRETS, check=False)
        docker.docker("network", "rm", NETWORK, check=False)
        docker.docker("volume", "rm", VOLUME, check=False)


def _wait_until_unused(docker: Engine, timeout: float = 60) -> None:
    """Until no container mounts the volume: Swarm removes a removed service's containers afterwards."""
    deadline = time.monotonic() + timeout
    while docker.docker("ps", "-aq", "--filter", f"volume={VOLUME}").stdout.strip():
        assert time.monotonic() < deadline, f"containers still mount {VOLUME} after {timeout} s"
        time.sleep(0.5)


def _inspect(docker: Engine, *names: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(docker.docker("inspect", *names).stdout)
    return found


def _healthy_task(docker: Engine, not_these: set[str]) -> str:
    """The full id of the service's container once Docker calls it healthy, other than ``not_these``."""
    deadline = time.monotonic() + HEALTHY_WITHIN
    while time.monotonic() < deadline:
        listed = docker.docker(
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            f"label=com.docker.swarm.service.name={SERVICE}",
            "--filter",
            "health=healthy",
        ).stdout.split()
        fresh = [container for container in listed if container not in not_these]
        if fresh:
            return fresh[0]
        time.sleep(1)
    tasks = docker.docker("service", "ps", "--no-trunc", SERVICE, check=False)
    logs = docker.docker("service", "logs", "--raw", SERVICE, check=False)
    raise AssertionError(
        f"no healthy task within {HEALTHY_WITHIN} s:\n{tasks.stdout}{tasks.stderr}\n{logs.stderr[-3000:]}"
    )


def _master(docker: Engine, image: str, version: str, calls: list[dict[str, Any]]) -> list[tuple[int, Any]]:
    """The readiness gate and then ``calls``, from a container on the network, by the service's name."""
    client = REPO / "tests" / "swarm_master.py"
    result = docker.docker(
        "run",
        "--rm",
        "--network",
        NETWORK,
        "--volume",
        f"{client}:/master.py:ro",
        "--entrypoint",
        "python3",
        image,
        "/master.py",
        f"http://{SERVICE}:8000",
        SLUG,
        version,
        json.dumps(calls),
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, f"the master-like client failed:\n{result.stdout}{result.stderr}"
    return [(status, body) for status, body in json.loads(result.stdout)]


def _in_task(docker: Engine, task: str, code: str) -> Any:
    """What ``code`` prints as JSON, run beside the runner in its task's container, as its user."""
    return json.loads(docker.docker("exec", task, "python3", "-c", code).stdout)


def _submit(hotkey: str, score: int) -> dict[str, Any]:
    return {"method": "POST", "path": "/submissions", "body": {"hotkey": hotkey, "score": score}}


WEIGHTS = {"path": "/internal/v1/get_weights", "headers": MASTER}
#: Who the task's process is, what it can read, and who owns its volume.
IDENTITY = """
import json, os
token = '/run/secrets/base/challenge_token'
print(json.dumps({
    'ids': [os.getuid(), os.getgid()],
    'pid1': open('/proc/1/cmdline').read().split('\\0')[1:3],
    'token': open(token).read(),
    'token_owner_mode': [os.stat(token).st_uid, oct(os.stat(token).st_mode & 0o777)],
    'data_owner': [os.stat('/data').st_uid, os.stat('/data').st_gid],
    'database_owner': os.stat('/data/challenge.sqlite3').st_uid,
}))
"""
#: Whether the root is writable anywhere outside /data, and the capabilities the process holds.
CONFINEMENT = """
import json
def writable(path):
    try:
        open(path, 'w').close()
    except OSError as exc:
        return exc.strerror
    return 'written'
status = dict(line.split(':\\t', 1) for line in open('/proc/self/status').read().splitlines() if ':\\t' in line)
print(json.dumps({'tmp': writable('/tmp/probe'), 'root': writable('/probe'), 'data': writable('/data/tmp/probe'),
                  'effective_caps': status['CapEff'].strip()}))
"""


def test_runner_image_is_configured_as_base_runs_it(docker: Engine, images: Images) -> None:
    (image,) = _inspect(docker, images.runner)
    config = image["Config"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert config["User"] == "1000:1000"
    # Exec form: PID 1 is the runner itself, so SIGTERM reaches it.
    assert config["Cmd"] == ["base-runner", "serve"]
    assert not config.get("Entrypoint")
    assert "8000/tcp" in config["ExposedPorts"]
    assert {k: env.get(k) for k in ("CHALLENGE_HOST", "CHALLENGE_PORT", "CHALLENGE_DATA_DIR", "TMPDIR")} == {
        "CHALLENGE_HOST": "0.0.0.0",
        "CHALLENGE_PORT": "8000",
        "CHALLENGE_DATA_DIR": "/data",
        "TMPDIR": "/data/tmp",
    }
    assert config["Healthcheck"]["Interval"] == 30 * 10**9
    assert config["Healthcheck"]["Test"][0] == "CMD", "the HEALTHCHECK must be exec form"
    # As root, so that nothing is hidden by permissions.
    layout = """
import json, os, shutil
print(json.dumps({
    'data': [os.stat('/data').st_uid, os.stat('/data').st_gid, os.path.isdir('/data/tmp')],
    'leftovers': [p for p in ('/src', '/root/.cache', '/tmp/wheels') if os.path.exists(p)] + os.listdir('/tmp'),
    'compilers': [c for c in ('gcc', 'cc', 'c++', 'make') if shutil.which(c)],
    'venv_owner': os.stat('/opt/base-runner').st_uid,
    'runner': shutil.which('base-runner'), 'python': shutil.which('python'),
}))
"""
    found = json.loads(
        docker.docker(
            "run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "python3", images.runner, "-c", layout
        ).stdout
    )
    # Only the venv came from the build stage: no sources, wheels, caches or compilers; the venv
    # belongs to root, so the service's uid cannot rewrite the code it runs. `python` is the
    # venv's: the 3.1 master's health check calls it by that name.
    assert found == {
        "data": [1000, 1000, True],
        "leftovers": [],
        "compilers": [],
        "venv_owner": 0,
        "runner": "/opt/base-runner/bin/base-runner",
        "python": "/opt/base-runner/bin/python",
    }


def test_healthcheck_fails_when_nothing_answers(docker: Engine, images: Images) -> None:
    (image,) = _inspect(docker, images.first)
    _, *healthcheck = image["Config"]["Healthcheck"]["Test"]
    result = docker.docker("run", "--rm", "--network", "none", images.first, *healthcheck, check=False)
    assert result.returncode != 0, result


def test_challenge_packages_build_lists_its_challenge(docker: Engine, images: Images) -> None:
    listed = docker.docker("run", "--rm", "--network", "none", images.second, "base-runner", "plugins")
    assert listed.stdout.startswith(f"{SLUG}  example-challenge {SECOND}"), listed.stdout
    assert "loads" in listed.stdout


def test_swarm_service_as_base_deploys_it_keeps_its_data_through_every_stop(
    docker: Engine, images: Images, died: DieEvents, swarm_objects: None
) -> None:
    seen: set[str] = set()

    # The seed's master: network, labelled volume, token secret and service, as the documents say.
    docker.shell("\n".join(doc_commands("deploy", images.first)), env={"TOKEN": TOKEN})
    (made,) = _inspect(docker, VOLUME)
    task = _healthy_task(docker, seen)
    seen.add(task)
    (container,) = _inspect(docker, task)
    # Healthy by the image's own HEALTHCHECK: the service sets none of its own.
    assert container["Config"]["Healthcheck"] == _inspect(docker, images.first)[0]["Config"]["Healthcheck"]
    answers = _master(
        docker,
        images.first,
        FIRST,
        [_submit("5Fminer", 7), WEIGHTS, {**WEIGHTS, "headers": {**MASTER, "Authorization": "Bearer not-the-token"}}],
    )
    assert answers[0][0] == 201, answers
    assert (answers[1][0], answers[1][1]["weights"]) == (200, {"5Fminer": 7.0}), answers
    assert answers[2][0] == 401, answers
    assert _in_task(docker, task, IDENTITY) == {
        "ids": [1000, 1000],
        # The runner is PID 1 (its script, run by the venv's python): SIGTERM reaches it, no shell between.
        "pid1": ["/opt/base-runner/bin/base-runner", "serve"],
        "token": TOKEN,
        "token_owner_mode": [0, "0o444"],
        "data_owner": [1000, 1000],
        "database_owner": 1000,
    }
    # The purge's find lists the volume by its label; its removal is refused while the service exists.
    assert VOLUME in docker.shell(doc_block("find").replace("<slug>", SLUG)).stdout.split()
    refused = docker.docker("volume", "rm", VOLUME, check=False)
    assert refused.returncode != 0 and "in use" in refused.stderr, refused
    # CreatedAt is not the creation time: the runner's files at the top of /data moved it.
    (used,) = _inspect(docker, VOLUME)
    assert used["CreatedAt"] > made["CreatedAt"], (made["CreatedAt"], used["CreatedAt"])

    # Removed and created again, by the 3.1 master this time, on the same volume.
    docker.docker("service", "rm", SERVICE)
    assert died.exit_code(task) == 0, "the task did not exit 0 on SIGTERM at service rm"
    docker.shell("\n".join(doc_commands("deploy-3.1", images.first)), env={"GATEWAY_TOKEN": "gateway"})
    task = _healthy_task(docker, seen)
    seen.add(task)
    assert _inspect(docker, task)[0]["Config"]["Healthcheck"]["Interval"] == 10 * 10**9
    answers = _master(docker, images.first, FIRST, [{"path": "/submissions/5Fminer"}, _submit("5Fother", 9)])
    assert answers == [(200, [7]), (201, answers[1][1])], answers

    # Killed: Swarm starts another task (restart condition any), which finds both writes.
    docker.docker("kill", "--signal", "KILL", task)
    assert died.exit_code(task) == 137
    task = _healthy_task(docker, seen)
    seen.add(task)
    answers = _master(docker, images.first, FIRST, [{"path": "/submissions/5Fother"}, WEIGHTS])
    assert answers[0] == (200, [9]), answers
    assert answers[1][1]["weights"] == {"5Fminer": 7.0, "5Fother": 9.0}, answers

    # A rolling update to the next version: the old task stops on SIGTERM, the new one has the data.
    docker.shell("\n".join(doc_commands("upgrade", images.second)))
    assert died.exit_code(task) == 0, "the task did not exit 0 on SIGTERM at the update"
    task = _healthy_task(docker, seen)
    seen.add(task)
    answers = _master(docker, images.second, SECOND, [{"path": "/version"}, {"path": "/submissions/5Fminer"}])
    assert answers[0][1]["challenge_version"] == SECOND, answers
    assert answers[1] == (200, [7]), answers
    (service,) = _inspect(docker, SERVICE)
    assert service["Spec"]["Labels"]["base.challenge.version"] == SECOND

    # With every option BASE may add from a challenge's resources: read-only, no capabilities, limits.
    docker.docker("service", "rm", SERVICE)
    assert died.exit_code(task) == 0, "the updated task did not exit 0 on SIGTERM at service rm"
    (create,) = [c for c in doc_commands("deploy-3.1", images.first) if c.startswith("docker service create")]
    (resources,) = doc_commands("resources")
    hostname = f"--hostname {SERVICE}"
    assert hostname in create
    docker.shell(create.replace(hostname, f"{hostname} {resources}"))
    task = _healthy_task(docker, seen)
    seen.add(task)
    host = _inspect(docker, task)[0]["HostConfig"]
    assert (host["ReadonlyRootfs"], host["CapDrop"], host["Init"]) == (True, ["ALL"], True), host
    assert (host["NanoCpus"], host["Memory"], host["PidsLimit"]) == (10**9, 256 * 2**20, 128), host
    assert not host.get("Tmpfs") and not [m for m in host.get("Mounts") or [] if m["Type"] == "tmpfs"], host
    assert _in_task(docker, task, CONFINEMENT) == {
        "tmp": "Read-only file system",
        "root": "Read-only file system",
        "data": "written",
        "effective_caps": "0000000000000000",
    }
    answers = _master(docker, images.first, FIRST, [_submit("5Fthird", 3), {"path": "/submissions/5Fminer"}])
    assert answers == [(201, answers[0][1]), (200, [7])], answers
    docker.docker("service", "rm", SERVICE)
    assert died.exit_code(task) == 0, "the confined task did not exit 0 on SIGTERM"

    # The purge, as the documents tell it: once nothing mounts the volume, it goes.
    _wait_until_unused(docker)
    docker.shell(doc_block("purge").replace("<challenge-data-volume>", VOLUME))
    assert docker.shell(doc_block("find").replace("<slug>", SLUG)).stdout.split() == ["DRIVER", "VOLUME", "NAME"]
