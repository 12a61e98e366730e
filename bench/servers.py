"""Server processes on loopback ports: started, timed to their first 200, measured, stopped."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE_RUNNER = str(Path(sys.executable).with_name("base-runner"))
TOKEN = "bench-master-token"
SLUG = "example"
MASTER_HEADERS = {"Authorization": f"Bearer {TOKEN}", "X-Base-Challenge-Slug": SLUG}
# A developer's shell may set these; they would change what the servers do.
_OUTSIDE = ("CHALLENGE_", "BASE_", "PLATFORM_", "PYTHONDONTWRITEBYTECODE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(extra: dict[str, str]) -> dict[str, str]:
    """The caller's environment without the settings that change a server, and ``extra``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(_OUTSIDE)}
    # bench.apps must import in the server; keep whatever else the caller put on the path.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env.update(extra)
    return env


@dataclass
class Server:
    """A running server process."""

    proc: subprocess.Popen[bytes]
    port: int
    #: Seconds from spawning the process to its first 200 on ``/health``.
    started_in: float
    #: CPU seconds the process had used by then: steadier than ``started_in`` on a busy machine.
    started_cpu: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def post(self, path: str) -> bytes:
        """The body of a 2xx answer to ``POST path`` with no body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        try:
            conn.request("POST", path)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if not 200 <= response.status < 300:
            raise RuntimeError(f"POST {path} answered {response.status}: {body[:500]!r}")
        return body

    def rss_mb(self) -> float:
        """Resident memory of the process, in MiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS in /proc")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # utime and stime, fields 14 and 15 of the line, 12 and 13 after the command name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(command: list[str], log: Path, env: dict[str, str] | None = None, timeout: float = 30) -> Server:
    """Spawn ``command`` (which gets ``--host 127.0.0.1 --port N`` appended) and wait for a 200 on ``/health``."""
    port = free_port()
    with log.open("ab") as out:
        spawned = time.perf_counter()
        proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            env=environment(env or {}),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=log.parent,
        )
    server = Server(proc, port, 0.0)
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{command[0]} exited with {proc.returncode}; see {log}:\n{log.read_text()[-2000:]}")
        try:
            if server.get("/health")[0] == 200:
                server.started_in = time.perf_counter() - spawned
                server.started_cpu = cpu_seconds(proc.pid)
                return server
        except OSError:
            pass
        if time.perf_counter() - spawned > timeout:
            server.stop()
            raise RuntimeError(f"{command[0]} did not answer /health within {timeout:g} s; see {log}")
        time.sleep(0.005)


def uvicorn(factory: str, *options: str) -> list[str]:
    """The command serving the app factory ``factory`` (``module:name``) under uvicorn's defaults and ``options``."""
    return [sys.executable, "-m", "uvicorn", factory, "--factory", *options]


def runner(data_dir: Path, slug: str = SLUG) -> list[str]:
    """The command serving challenge ``slug`` on ``data_dir``, exactly as in production."""
    return [BASE_RUNNER, "serve", "--challenge", slug, "--data-dir", str(data_dir)]


def runner_env() -> dict[str, str]:
    return {"CHALLENGE_SHARED_TOKEN": TOKEN}
