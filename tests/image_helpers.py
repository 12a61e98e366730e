"""A Docker engine and a single-node Swarm of the image test's own, and the local base image.

Debian's docker.io (Docker 20.10, BuildKit built in) is used through
``/usr/bin/docker``: the ``docker`` first on PATH on the project's machines
may be a newer client without buildx, which cannot build ``RUN --mount``. The
test starts its own ``dockerd`` with every folder it writes (data root, exec
root, pid file, socket) in a temporary folder, no bridge and no iptables, so
it touches nothing of the host's and only loopback and its own container
networks carry traffic. No registry is reachable, so the base image is a
Debian root filesystem made by debootstrap (cached between runs) with the
host's CA bundle in it, and local images are named ``localhost/...`` so Swarm
looks nothing up off the machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
#: What debootstrap installs: the parts of python:3.12-slim the Dockerfile uses.
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
#: Outside any checkout, so that a fresh clone in CI finds it.
CACHE_DIR = Path("/var/cache/base-runner-ci")
#: The host's CA bundle: TLS to the package index passes through a proxy whose CA only it has.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
#: Where dockerd looks for plugin sockets; not movable in Docker 20.10.
PLUGINS_DIR = Path("/run/docker/plugins")
#: The bridge Swarm makes for its containers' way out; the test's containers never use it.
GATEWAY_BRIDGE = "docker_gwbridge"

_BUILD_TIMEOUT = 900
_BOOTSTRAP_TIMEOUT = 900


class Engine:
    """``dockerd`` (and the ``containerd`` it starts) living in ``root``, stopped by their pids."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.process: subprocess.Popen[bytes] | None = None
        self._made_plugins_dir = False
        self._made_gateway_bridge = False

    @property
    def env(self) -> dict[str, str]:
        """The environment of every ``docker`` call: this engine, BuildKit, Debian's client first."""
        return {
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_BUILDKIT": "1",
            "DOCKER_CONFIG": str(self.root / "client"),
            "PATH": "/usr/bin:/usr/sbin:/bin:/sbin",
            "HOME": str(self.root),
        }

    def start(self, timeout: float = 60) -> None:
        # dockerd writes its identity key to /etc/docker unless its configuration says where.
        config = self.root / "daemon.json"
        config.write_text(json.dumps({"deprecated-key-path": str(self.root / "key.json")}))
        # The one folder dockerd makes outside its roots, whatever it is told: removed if it made it.
        self._made_plugins_dir = not PLUGINS_DIR.parent.exists()
        self._made_gateway_bridge = not Path(f"/sys/class/net/{GATEWAY_BRIDGE}").exists()
        command = [DOCKERD, "--config-file", str(config)]
        command += ["--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec")]
        command += ["--pidfile", str(self.root / "dockerd.pid"), "--host", f"unix://{self.socket}"]
        # No bridge, no NAT, no forwarding: containers get only the networks the test creates.
        command += ["--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false"]
        with (self.root / "dockerd.log").open("ab") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while self.docker("version", check=False).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"dockerd did not start:\n{self.log()}")
            time.sleep(0.5)

    def log(self) -> str:
        path = self.root / "dockerd.log"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""

    def docker(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return run([DOCKER, *args], env=self.env, input=input, check=check, timeout=timeout)

    def shell(self, script: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """A script of ``docker`` commands, as an operator types it, against this engine."""
        return run(["bash", "-euo", "pipefail", "-c", script], env={**self.env, **(env or {})}, timeout=300)

    def stop(self) -> None:
        """Swarm left, dockerd and containerd stopped by pid, every mount under ``root`` undone."""
        if self.process is not None and self.process.poll() is None:
            self.docker("swarm", "leave", "--force", check=False, timeout=60)
            containers = self.docker("ps", "-aq", check=False).stdout.split()
            if containers:
                self.docker("rm", "--force", "--volumes", *containers, check=False, timeout=120)
            # Swarm's bridge to the host: an interface in the host's namespace, which outlives dockerd.
            self.docker("network", "rm", GATEWAY_BRIDGE, check=False)
        containerd = _pid(self.root / "exec" / "containerd" / "containerd.pid")
        if self.process is not None:
            _terminate(self.process.pid, lambda: self.process is not None and self.process.poll() is None)
        if containerd is not None:
            _terminate(containerd, lambda: _alive(containerd))
        # The shims of containers that outlived a hard stop: found by this engine's own root, nothing else.
        for pid in _pids_mentioning(str(self.root)):
            _terminate(pid, lambda pid=pid: _alive(pid))
        for mount in reversed(_mounts_under(self.root)):
            subprocess.run(["umount", "--lazy", mount], check=False, capture_output=True)
        if self._made_gateway_bridge and Path(f"/sys/class/net/{GATEWAY_BRIDGE}").exists():
            subprocess.run(["ip", "link", "delete", GATEWAY_BRIDGE], check=False, capture_output=True)
        if self._made_plugins_dir:
            for folder in (PLUGINS_DIR, PLUGINS_DIR.parent):
                with contextlib.suppress(OSError):
                    folder.rmdir()


@contextlib.contextmanager
def engine() -> Iterator[Engine]:
    """A running engine in a fresh temporary folder, gone with its folder afterwards whatever happens."""
    # Under /tmp: a unix socket path must stay under 108 bytes.
    with tempfile.TemporaryDirectory(prefix="swarm-", dir="/tmp") as folder:
        started = Engine(Path(folder))
        try:
            started.start()
            yield started
        finally:
            started.stop()


class DieEvents:
    """``docker events`` for containers that died, so that a removed task's exit code is still known."""

    def __init__(self, engine: Engine) -> None:
        command = [DOCKER, "events", "--filter", "type=container", "--filter", "event=die", "--format", "{{json .}}"]
        self._process = subprocess.Popen(command, env=engine.env, stdout=subprocess.PIPE, text=True)
        self._codes: dict[str, int] = {}
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            event = json.loads(line)
            with self._changed:
                self._codes[event["id"]] = int(event["Actor"]["Attributes"]["exitCode"])
                self._changed.notify_all()

    def exit_code(self, container: str, timeout: float = 30) -> int:
        """The exit code of ``container`` (a full id), waiting for it to die."""
        with self._changed:
            if not self._changed.wait_for(lambda: container in self._codes, timeout=timeout):
                raise AssertionError(f"container {container[:12]} did not stop within {timeout} s")
            return self._codes[container]

    def close(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)


def base_image(engine: Engine) -> str:
    """The local stand-in for ``python:3.12-slim``, with the host's CA bundle for the builds' pip.

    Made once per engine. The root filesystem's tarball is cached under
    :data:`CACHE_DIR`; without it debootstrap makes one (about a minute and a half).
    """
    key = hashlib.sha256(json.dumps([BASE_SUITE, "minbase", *BASE_PACKAGES]).encode()).hexdigest()[:12]
    name = f"localhost/debian-python:{BASE_SUITE}-{key}"
    if engine.docker("image", "inspect", name, check=False).returncode == 0:
        return name
    tarball = CACHE_DIR / f"debian-python-{BASE_SUITE}-{key}.tar"
    if not tarball.exists():
        _bootstrap(tarball)
    rootfs = f"localhost/debian-python-rootfs:{BASE_SUITE}-{key}"
    engine.docker("import", str(tarball), rootfs, timeout=_BOOTSTRAP_TIMEOUT)
    with tempfile.TemporaryDirectory() as context:
        bundle = Path(context) / "ca-certificates.crt"
        bundle.write_bytes(HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.exists() else b"")
        (Path(context) / "Dockerfile").write_text(
            f"FROM {rootfs}\nCOPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n"
        )
        build(engine, Path(context), name, Path(context) / "Dockerfile", {})
    return name


def _bootstrap(tarball: Path) -> None:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as scratch:
        rootfs = Path(scratch) / "rootfs"
        include = f"--include={','.join(BASE_PACKAGES)}"
        run(["debootstrap", "--variant=minbase", include, BASE_SUITE, str(rootfs)], timeout=_BOOTSTRAP_TIMEOUT)
        # Like the slim images: no downloaded packages or package lists.
        for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftovers).glob("*"):
                if path.is_file():
                    path.unlink()
        partial = tarball.with_suffix(".partial")
        run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], timeout=_BOOTSTRAP_TIMEOUT)
        partial.rename(tarball)


def build(engine: Engine, context: Path, tag: str, dockerfile: Path, build_args: Mapping[str, str]) -> None:
    """``docker build`` of a real Dockerfile; ``--network host`` is how its RUN steps reach the package index."""
    command = ["build", "--network", "host", "--file", str(dockerfile), "--tag", tag]
    for name, value in build_args.items():
        command += ["--build-arg", f"{name}={value}"]
    engine.docker(*command, str(context), timeout=_BUILD_TIMEOUT)


def run(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``command``'s output; with ``check``, a failure shows everything it printed."""
    result = subprocess.run(command, env=env, input=input, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead but for its parent's wait; /proc tells it apart.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


def _terminate(pid: int, running: object, grace: float = 30) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; ``running()`` tells whether ``pid`` is still up."""
    assert callable(running)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
        if not running():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while running() and time.monotonic() < deadline:
            time.sleep(0.2)


def _pids_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def _mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, in the order they were mounted."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == str(root) or point.startswith(f"{root}/"):
            points.append(point)
    return points


#: Debian's busybox-static: one static binary, the whole userland of the executor tests' image.
BUSYBOX = Path("/bin/busybox")


def busybox_image(engine: Engine, name: str = "localhost/executor-busybox:1") -> str:
    """A tiny local image, made in well under a second by ``docker import`` of a tarball: no registry, no build."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "rootfs"
        (root / "bin").mkdir(parents=True)
        for empty in ("tmp", "etc", "proc", "sys", "dev"):
            (root / empty).mkdir()
        (root / "bin" / "busybox").write_bytes(BUSYBOX.read_bytes())
        (root / "bin" / "busybox").chmod(0o755)
        for applet in set(run([str(BUSYBOX), "--list"]).stdout.split()) - {"busybox"}:
            (root / "bin" / applet).symlink_to("busybox")
        tarball = Path(folder) / "rootfs.tar"
        run(["tar", "-C", str(root), "-cf", str(tarball), "."])
        engine.docker("import", "--change", "ENV PATH=/bin", str(tarball), name)
    return name
