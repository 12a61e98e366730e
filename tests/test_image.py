"""The runner image, built from the real Dockerfile and run the way BASE deploys it.

The image is built on a local Debian base (no registry is reachable here), a
challenge is added with the documented derived-image recipe, and the image's
own CMD, ENV, USER and HEALTHCHECK run with the root read-only and a host
folder as the /data volume; see image_helpers for how, without Docker.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from image_helpers import Container, base_image, build, inspect, mounted, remove_image, request

REPO = Path(__file__).resolve().parent.parent
MISSING = [tool for tool in ("podman", "debootstrap") if shutil.which(tool) is None]
pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"needs {' and '.join(MISSING)} (.ci/install-image-tools installs them)"
)

SLUG = "example"
TOKEN = "token-for-the-image-test"
#: What the master injects into every challenge service (base-contract.md).
MASTER_ENV = {
    "BASE_CHALLENGE_SLUG": SLUG,
    "CHALLENGE_DATABASE_URL": "sqlite+aiosqlite:////data/challenge.sqlite3",
    "CHALLENGE_SHARED_TOKEN_FILE": "/run/secrets/base/challenge_token",
}


def _wheel(project: Path, into: Path) -> Path:
    """The project's wheel, built from a copy: setuptools writes its build files next to the sources."""
    copy = into / "source"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            str(copy),
            "-w",
            str(into),
        ],
        check=True,
        timeout=300,
    )
    shutil.rmtree(copy)
    (wheel,) = into.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def runner_image() -> Iterator[str]:
    tag = f"localhost/base-runner-test:{uuid.uuid4().hex[:12]}"
    build(REPO, tag, REPO / "Dockerfile", {"BASE_IMAGE": base_image()})
    try:
        yield tag
    finally:
        remove_image(tag)


@pytest.fixture(scope="module")
def challenge_image(runner_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The example challenge added the way docs/operating.md tells a challenge author to."""
    project = tmp_path_factory.mktemp("challenge-project")
    _wheel(REPO / "plugins" / "example", project / "dist")
    tag = f"{runner_image}-challenge"
    build(project, tag, REPO / "examples" / "challenge.Dockerfile", {"RUNNER_IMAGE": runner_image})
    try:
        yield tag
    finally:
        remove_image(tag)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def deployed(challenge_image: str, tmp_path: Path) -> Iterator[Container]:
    """The challenge image as BASE runs it, on a loopback port of its own.

    The volume starts as Docker makes a new named volume: a copy of the
    image's /data, owner and mode included. The token is a Swarm secret
    file: owned by root, mode 0444.
    """
    volume, secrets = tmp_path / "volume", tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "challenge_token").write_text(TOKEN + "\n")
    (secrets / "challenge_token").chmod(0o444)
    with mounted(challenge_image) as root:
        shutil.copytree(root / "data", volume, symlinks=True)
        for path in [volume, *volume.rglob("*")]:
            original = (root / "data" / path.relative_to(volume)).stat()
            os.chown(path, original.st_uid, original.st_gid)
        container = Container.of(inspect(challenge_image), root, volume, secrets, tmp_path / "container.log")
        container.env.update(MASTER_ENV)
        # The image binds 0.0.0.0:8000, as Swarm needs; here only loopback may be used.
        container.env.update({"CHALLENGE_HOST": "127.0.0.1", "CHALLENGE_PORT": str(_free_port())})
        try:
            yield container
        finally:
            container.kill()


def _url(container: Container, path: str) -> str:
    return f"http://127.0.0.1:{container.env['CHALLENGE_PORT']}{path}"


def _healthcheck(image: dict[str, Any]) -> list[str]:
    kind, *command = image["Healthcheck"]["Test"]
    assert kind == "CMD", "the HEALTHCHECK must be exec form: no shell in the image is needed"
    return [str(part) for part in command]


def test_runner_image_is_configured_as_base_runs_it(runner_image: str) -> None:
    image = inspect(runner_image)
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
    assert image["Healthcheck"]["Interval"] == 30 * 10**9
    with mounted(runner_image) as root:
        data = (root / "data").stat()
        assert (data.st_uid, data.st_gid) == (1000, 1000)
        assert stat.S_ISDIR(data.st_mode)
        # Only the venv came from the build stage: no sources, wheels, caches or compilers.
        assert not (root / "src").exists()
        assert not list((root / "tmp").iterdir())
        assert not (root / "root" / ".cache").exists()
        assert (root / "opt/base-runner/bin/base-runner").exists()
        compilers = [
            c for c in ("gcc", "cc", "c++", "make") for d in ("usr/bin", "usr/local/bin") if (root / d / c).exists()
        ]
        assert compilers == []
        # The venv belongs to root: the service's uid cannot rewrite the code it runs.
        assert (root / "opt/base-runner").stat().st_uid == 0


def test_healthcheck_fails_when_nothing_answers(challenge_image: str, deployed: Container) -> None:
    result = deployed.run(_healthcheck(inspect(challenge_image)))
    assert result.returncode != 0, result


def test_challenge_image_serves_keeps_its_data_and_stops_on_sigterm(challenge_image: str, deployed: Container) -> None:
    healthcheck = _healthcheck(inspect(challenge_image))
    deployed.start()
    deployed.wait_for(_url(deployed, "/health"))

    assert request(_url(deployed, "/health")) == (200, {"status": "ok", "slug": SLUG, "version": "0.1.0"})
    checked = deployed.exec(healthcheck)
    assert checked.returncode == 0, checked
    # The root is read-only, even the world-writable /tmp: the runner needs only /data.
    probe = deployed.exec(["python3", "-c", "open('/tmp/probe', 'w')"])
    assert "Read-only file system" in probe.stderr, probe
    status, body = request(_url(deployed, "/submissions"), method="POST", body={"hotkey": "5Fminer", "score": 7})
    assert status == 201, body
    # The master's call, with the token the secret file holds: readable by uid 1000.
    master = {"Authorization": f"Bearer {TOKEN}", "X-Base-Challenge-Slug": SLUG}
    status, body = request(_url(deployed, "/internal/v1/get_weights"), headers=master)
    assert (status, body["weights"]) == (200, {"5Fminer": 7.0}), body

    assert deployed.stop() == 0, deployed.logs()
    database = deployed.volume / "challenge.sqlite3"
    assert database.stat().st_uid == 1000
    assert (deployed.volume / "tmp").is_dir()

    deployed.start()
    deployed.wait_for(_url(deployed, "/health"))
    assert request(_url(deployed, "/submissions/5Fminer")) == (200, [7])
    assert deployed.stop() == 0, deployed.logs()


def test_build_argument_installs_a_challenge(tmp_path: Path) -> None:
    """CHALLENGE_PACKAGES: the runner and a challenge in one build, as docs/operating.md tells it."""
    wheels = REPO / "wheels"
    made = not wheels.exists()
    wheel = _wheel(REPO / "plugins" / "example", tmp_path)
    wheels.mkdir(exist_ok=True)
    shutil.copy(wheel, wheels)
    tag = f"localhost/base-runner-test:{uuid.uuid4().hex[:12]}"
    try:
        build(
            REPO, tag, REPO / "Dockerfile", {"BASE_IMAGE": base_image(), "CHALLENGE_PACKAGES": f"wheels/{wheel.name}"}
        )
        with mounted(tag) as root:
            # Listing the plugins needs neither the volume nor secrets: empty folders stand in.
            container = Container.of(inspect(tag), root, tmp_path, tmp_path, tmp_path / "container.log")
            listed = container.run(["base-runner", "plugins"])
    finally:
        remove_image(tag)
        (wheels / wheel.name).unlink()
        if made:
            wheels.rmdir()
    assert listed.returncode == 0, listed
    assert listed.stdout.startswith(f"{SLUG}  example-challenge 0.1.0"), listed.stdout
    assert "loads" in listed.stdout
