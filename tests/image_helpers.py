"""Build the runner image with podman and run it as Docker would, without Docker.

No registry and no Docker engine are reachable on the project's machines, and
``podman run`` is refused by their sandbox. So the base image is a Debian
root filesystem made by debootstrap and imported into podman (cached between
runs), images are built with ``podman build`` from the real Dockerfiles, and a
"container" is the image's mounted root filesystem, entered in a private
mount namespace: the root read-only, a host folder as the ``/data`` volume,
secrets under ``/run/secrets/base``, the image's user, working dir, ``ENV``
and ``CMD``. Everything runs on the host's network, so servers bind 127.0.0.1.

Run as a script (``python image_helpers.py SPEC``), this module is the
launcher that sets up those mounts inside ``unshare --mount`` and then
becomes the container's command.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: What debootstrap installs: the parts of python:3.12-slim the Dockerfile uses.
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
#: Outside any checkout, so that a fresh clone in CI finds it.
CACHE_DIR = Path("/var/cache/base-runner-ci")
#: The host's CA bundle: TLS to the package index passes through a proxy whose CA only it has.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

_BUILD_TIMEOUT = 600
_BOOTSTRAP_TIMEOUT = 900


def _key() -> str:
    """A name for the base that changes whenever what goes into it does."""
    inputs = json.dumps([BASE_SUITE, "minbase", *BASE_PACKAGES])
    return hashlib.sha256(inputs.encode()).hexdigest()[:12]


def base_image() -> str:
    """The local stand-in for ``python:3.12-slim``, made once and then reused.

    Layers of cache: the image in podman's storage; else the root
    filesystem's tarball under :data:`CACHE_DIR`; else debootstrap (about a
    minute), whose result fills both.
    """
    name = f"localhost/debian-python:{BASE_SUITE}-{_key()}"
    if _run(["podman", "image", "exists", name], check=False).returncode == 0:
        return name
    tarball = CACHE_DIR / f"debian-python-{BASE_SUITE}-{_key()}.tar"
    if not tarball.exists():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE_DIR) as scratch:
            rootfs = Path(scratch) / "rootfs"
            _run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    BASE_SUITE,
                    str(rootfs),
                ],
                timeout=_BOOTSTRAP_TIMEOUT,
            )
            # Like the slim images: no downloaded packages or package lists.
            for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for path in (rootfs / leftovers).glob("*"):
                    if path.is_file():
                        path.unlink()
            partial = tarball.with_suffix(".partial")
            _run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], timeout=_BOOTSTRAP_TIMEOUT)
            partial.rename(tarball)
    _run(["podman", "import", str(tarball), name], timeout=_BOOTSTRAP_TIMEOUT)
    return name


def build(context: Path, tag: str, dockerfile: Path, build_args: Mapping[str, str]) -> None:
    """``podman build`` of a real Dockerfile, leaving nothing behind but the tagged image.

    ``--layers=false`` keeps no intermediate images to clean up; ``--format
    docker`` keeps ``HEALTHCHECK``, which the OCI format drops; the host's CA
    bundle is mounted for the build's RUN steps only, never stored in a layer.
    """
    command = ["podman", "build", "--isolation", "chroot", "--format", "docker", "--layers=false", "--pull=never"]
    command += ["--file", str(dockerfile), "--tag", tag]
    for name, value in build_args.items():
        command += ["--build-arg", f"{name}={value}"]
    if HOST_CA_BUNDLE.exists():
        command += ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
    _run([*command, str(context)], timeout=_BUILD_TIMEOUT)


def remove_image(tag: str) -> None:
    _run(["podman", "image", "rm", "--force", tag], check=False)


def inspect(tag: str) -> dict[str, Any]:
    """``podman image inspect``: ``Config`` holds ENV, CMD and USER; ``Healthcheck`` is top-level."""
    image: dict[str, Any] = json.loads(_run(["podman", "image", "inspect", tag]).stdout)[0]
    return image


@contextlib.contextmanager
def mounted(tag: str) -> Iterator[Path]:
    """The image's root filesystem, as a folder on the host."""
    root = Path(_run(["podman", "image", "mount", tag]).stdout.strip())
    try:
        yield root
    finally:
        _run(["podman", "image", "umount", "--force", tag], check=False)


@dataclass
class Container:
    """How Docker would start the image: its root, user, working dir, environment and command."""

    root: Path
    volume: Path
    secrets: Path
    uid: int
    gid: int
    workdir: str
    env: dict[str, str]
    cmd: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def of(cls, image: Mapping[str, Any], root: Path, volume: Path, secrets: Path, log: Path) -> Container:
        config = image["Config"]
        uid, _, gid = config["User"].partition(":")
        env = dict(item.split("=", 1) for item in config.get("Env") or [])
        # Docker sets HOME from the user's passwd entry when the image does not.
        env.setdefault("HOME", _home(root, int(uid)))
        return cls(
            root=root,
            volume=volume,
            secrets=secrets,
            uid=int(uid),
            gid=int(gid or uid),
            workdir=config.get("WorkingDir") or "/",
            env=env,
            cmd=[*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])],
            log=log,
        )

    def _spec(self, cmd: Sequence[str]) -> str:
        return json.dumps(
            {
                "root": str(self.root),
                "volume": str(self.volume),
                "secrets": str(self.secrets),
                "uid": self.uid,
                "gid": self.gid,
                "workdir": self.workdir,
                "env": self.env,
                "cmd": list(cmd),
            }
        )

    def start(self) -> None:
        """Start the image's command; the launcher execs into it, so the PID is the command's."""
        assert self.process is None or self.process.poll() is not None, "already running"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", sys.executable, __file__, self._spec(self.cmd)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def run(self, cmd: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` in a container of its own, like ``docker run IMAGE CMD``."""
        launcher = [sys.executable, __file__, self._spec(cmd)]
        return _run(["unshare", "--mount", "--propagation", "private", *launcher], check=False, timeout=timeout)

    def exec(self, cmd: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` beside the running command, like ``docker exec``: its mounts, root and user."""
        assert self.process is not None and self.process.poll() is None, self.logs()
        target = str(self.process.pid)
        enter = ["nsenter", "--target", target, "--mount", "--root", "--wd"]
        enter += ["--setuid", str(self.uid), "--setgid", str(self.gid), "--"]
        return subprocess.run(
            [*enter, *cmd], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, as ``docker stop`` sends it, then the exit code."""
        assert self.process is not None
        self.process.terminate()
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, url: str, timeout: float = 60) -> None:
        """Until ``url`` answers at all, or fail with the container's output."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, f"exited early:\n{self.logs()}"
            try:
                request(url)
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"{url} did not answer within {timeout} s:\n{self.logs()}")


def request(
    url: str, *, method: str = "GET", body: Any = None, headers: Mapping[str, str] | None = None
) -> tuple[int, Any]:
    """Status and decoded JSON body; never through a proxy, since only 127.0.0.1 is spoken to."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.load(exc)


def _home(root: Path, uid: int) -> str:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if len(fields) > 5 and fields[2] == str(uid):
            return fields[5]
    return "/"


def _run(command: Sequence[str], check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def _launch(spec: dict[str, Any]) -> None:
    """Inside a private mount namespace: lay out the container's mounts, then become its command.

    The mounts vanish with the namespace when the command exits, so nothing
    is left mounted on the host whatever happens to the test.
    """
    root = spec["root"]

    def mount(*args: str) -> None:
        subprocess.run(["mount", *args], check=True)

    mount("--bind", spec["volume"], f"{root}/data")
    mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", f"{root}/proc")
    # Docker gives a container a /dev of its own; the host's stands in.
    mount("--rbind", "/dev", f"{root}/dev")
    # The read-only root cannot take new mount points; a tmpfs on /run holds the secrets' one.
    mount("-t", "tmpfs", "-o", "nosuid,nodev,mode=755", "tmpfs", f"{root}/run")
    os.makedirs(f"{root}/run/secrets/base")
    mount("--bind", "-o", "ro", spec["secrets"], f"{root}/run/secrets/base")
    mount("-o", "remount,bind,ro", root)
    os.chroot(root)
    os.chdir(spec["workdir"])
    os.setgroups([])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    os.execvpe(spec["cmd"][0], spec["cmd"], spec["env"])


if __name__ == "__main__":
    _launch(json.loads(sys.argv[1]))
