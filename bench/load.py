"""Load from ``wrk``, with the CPU that the server and ``wrk`` each used while it ran.

A server process that used a whole core while ``wrk`` used less shows the
server, not the load generator, set the pace.
"""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .servers import cpu_seconds

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass
class Load:
    """What one ``wrk`` run measured."""

    requests: int
    per_second: float
    p50_ms: float
    p99_ms: float
    #: Responses outside 2xx/3xx, plus connect, read, write and timeout errors.
    errors: int
    #: Cores used on average by the server process and by ``wrk`` during the run.
    server_cores: float
    client_cores: float

    @property
    def server_us_per_request(self) -> float:
        """Server CPU time per request: steadier than throughput on a busy machine."""
        return self.server_cores * 1e6 / self.per_second if self.per_second else float("inf")

    @property
    def client_us_per_request(self) -> float:
        """``wrk``'s CPU time per request: below the server's, ``wrk`` on a core of its own outpaces the server."""
        return self.client_cores * 1e6 / self.per_second if self.per_second else float("inf")


def require_wrk() -> str:
    """The path of ``wrk``, or a :class:`SystemExit` that says how to install it."""
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("bench: wrk is not installed: apt-get install wrk (Debian, Ubuntu), brew install wrk (macOS)")
    return path


def _ms(number: str, unit: str) -> float:
    return float(number) * _UNITS[unit]


def run(
    url: str,
    server_pid: int,
    seconds: int,
    connections: int = 8,
    headers: dict[str, str] | None = None,
    script: Path | None = None,
) -> Load:
    """Run ``wrk`` with one thread and ``connections`` connections against ``url`` for ``seconds``."""
    command = [require_wrk(), "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "--latency"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    if script is not None:
        command += ["-s", str(script)]
    command.append(url)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before, started = cpu_seconds(server_pid), time.monotonic()
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    elapsed = time.monotonic() - started
    server = cpu_seconds(server_pid) - server_before
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime

    def number(pattern: str) -> re.Match[str] | None:
        return re.search(pattern, output)

    requests = number(r"(\d+) requests in")
    per_second = number(r"Requests/sec:\s+([\d.]+)")
    p50 = number(r"50%\s+([\d.]+)(us|ms|s)\b")
    p99 = number(r"99%\s+([\d.]+)(us|ms|s)\b")
    if not (requests and per_second and p50 and p99):
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    non_2xx = number(r"Non-2xx or 3xx responses: (\d+)")
    socket = number(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, socket.groups())) if socket else 0)
    return Load(
        requests=int(requests.group(1)),
        per_second=float(per_second.group(1)),
        p50_ms=_ms(*p50.groups()),
        p99_ms=_ms(*p99.groups()),
        errors=errors,
        server_cores=server / elapsed,
        client_cores=client / elapsed,
    )
