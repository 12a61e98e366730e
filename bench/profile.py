"""Where a write's CPU goes: ``python -m bench.profile``, the µs per example ``POST /submissions`` of each layer.

Serves the example challenge (installed as ``python -m bench`` does), loads it
with ``wrk`` (8 connections, the bench's writes), samples it with ``py-spy``
(``pip install py-spy``; it needs ptrace rights: root, or
``kernel.yama.ptrace_scope=0``) and gives each sample to the layer of its
innermost frame that belongs to one (:data:`LAYERS`). A layer's µs per write
is its share of the samples times the server's CPU time over the sampled
seconds (read from ``/proc``), divided by the writes committed meanwhile
(counted in the database). Samples are not CPU time: on a busy machine a
thread waiting for a core is sampled as running too, so read the shares
rather than the absolute figures, and compare runs taken side by side.

``--tree PATH`` serves another checkout's ``base_runner`` (its folder holding
``base_runner/``), for a before-and-after table in one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from . import load, servers
from .__main__ import POST_SCRIPT, _install_challenges

#: (layer, where its frames are): the first of a sample's frames, from the innermost out, that
#: matches one decides. A part is ``"file.py"`` (a file of base_runner), ``"pkg/"`` (a path part),
#: or ``"file.py:function"``.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("access line (logging)", ("access.py", "logs.py", "logging/")),
    ("request metrics", ("metrics.py", "prometheus_client/")),
    ("correlation id", ("correlation.py",)),
    ("request limits", ("limits.py",)),
    ("RunnerApp, its dispatch and write gate", ("app.py", "runtime.py")),
    ("unsaved-changes guard", ("unsaved.py",)),
    ("storable-values guard", ("storable.py",)),
    ("runner's sessions (db.py)", ("db.py",)),
    ("driver (loop side)", ("driver.py", "aiosqlite/")),
    ("SQLAlchemy ORM", ("sqlalchemy/orm/",)),
    ("SQLAlchemy Core, pool, asyncio adaptation", ("sqlalchemy/",)),
    ("the route's own code", ("example_challenge/",)),
    ("Starlette middleware", ("starlette/middleware/",)),
    ("FastAPI: routing, dependencies, validation, serialization", ("fastapi/", "starlette/", "pydantic")),
    ("uvicorn: HTTP", ("uvicorn/",)),
    ("event loop", ("asyncio/", "uvloop", "selectors.py")),
)
#: The thread aiosqlite runs sqlite3 on.
DRIVER_THREAD = "_connection_worker_thread"


def _file(frame: str) -> tuple[str, str]:
    """``(function, path)`` of a raw py-spy frame, ``function (path:line)``."""
    function, _, rest = frame.rpartition(" (")
    return function, rest.rsplit(":", 1)[0]


def _matches(function: str, path: str, part: str) -> bool:
    if part.endswith("/"):
        return f"/{part}" in f"/{path}" or path.startswith(part)
    if ":" in part:
        name, _, func = part.partition(":")
        return Path(path).name == name and func in function
    if part.endswith(".py") and not part.startswith(("selectors",)):
        return Path(path).name == part and "base_runner" in path
    return part in path


def layer_of(stack: list[str]) -> str:
    """The layer a sample (frames outermost first) is spent in."""
    for frame in reversed(stack):
        function, path = _file(frame)
        for layer, parts in LAYERS:
            if any(_matches(function, path, part) for part in parts):
                return layer
    return "other"


def attribute(raw: str) -> Counter[str]:
    """Samples by layer, from py-spy's ``--format raw --threads`` output."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack_text, _, number = line.rpartition(" ")
        if not number.isdigit():
            continue
        frames = stack_text.split(";")
        thread, frames = frames[0], frames[1:]
        if any(DRIVER_THREAD in frame for frame in frames):
            counts["driver's thread: sqlite3, WAL, fsync"] += int(number)
        elif "MainThread" in thread:
            counts[layer_of(frames)] += int(number)
        else:
            counts["other threads"] += int(number)
    return counts


def _writes(database: Path) -> int:
    conn = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM submissions").fetchone()[0]
    finally:
        conn.close()


def profile(folder: Path, tree: Path | None, seconds: int, connections: int) -> tuple[Counter[str], float, int]:
    """Samples by layer, the server's CPU seconds and the writes over the sampled window."""
    data = folder / f"data-{time.monotonic_ns()}"
    data.mkdir()
    command = servers.runner(data)
    if tree is not None:
        run = f"import sys; sys.path.insert(0, {str(tree)!r}); sys.argv[0] = 'base-runner'; "
        command = [sys.executable, "-c", run + "from base_runner.cli import main; main()", *command[1:]]
    server = servers.start(command, folder / "server.log", servers.runner_env())
    script = folder / "post.lua"
    script.write_text(POST_SCRIPT)
    raw = folder / "raw.txt"
    try:
        wrk = subprocess.Popen(
            [load.require_wrk(), "-t1", f"-c{connections}", f"-d{seconds + 3}s", "-s", str(script), server.url],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(1.5)
        writes, cpu = _writes(data / "challenge.sqlite3"), servers.cpu_seconds(server.proc.pid)
        spy = [_py_spy(), "record", "-p", str(server.proc.pid), "-d", str(seconds), "-r", "250"]
        subprocess.run([*spy, "-f", "raw", "-t", "--nonblocking", "-o", str(raw)], capture_output=True, check=True)
        cpu = servers.cpu_seconds(server.proc.pid) - cpu
        writes = _writes(data / "challenge.sqlite3") - writes
        wrk.wait(seconds + 30)
    finally:
        server.stop()
    return attribute(raw.read_text()), cpu, writes


def _py_spy() -> str:
    path = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(path).exists():
        raise SystemExit("bench.profile: py-spy is not installed: pip install py-spy")
    return path


def table(runs: dict[str, tuple[Counter[str], float, int]]) -> str:
    """Markdown: each layer's µs of server CPU per write, in each run."""
    layers = [layer for layer, _ in LAYERS] + ["driver's thread: sqlite3, WAL, fsync", "other threads", "other"]
    per_write = {
        name: {layer: cpu * 1e6 * samples[layer] / max(1, sum(samples.values())) / max(1, writes) for layer in layers}
        for name, (samples, cpu, writes) in runs.items()
    }
    names = list(runs)
    lines = ["| layer | " + " | ".join(f"{name}, µs/write" for name in names) + " |"]
    lines.append("|---|" + "---|" * len(names))
    for layer in layers:
        if any(per_write[name][layer] >= 0.5 for name in names):
            lines.append(f"| {layer} | " + " | ".join(f"{per_write[name][layer]:,.0f}" for name in names) + " |")
    totals = " | ".join(f"**{runs[n][1] * 1e6 / max(1, runs[n][2]):,.0f}**" for n in names)
    lines.append(f"| **server CPU per write** | {totals} |")
    lines.append("| writes in the sampled window | " + " | ".join(f"{runs[n][2]:,}" for n in names) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--tree", type=Path, action="append", default=[], help="another checkout to profile too")
    parser.add_argument("--seconds", type=int, default=10, help="seconds sampled per run")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each tree, alternating; samples add up")
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args(argv)
    load.require_wrk()
    _py_spy()
    trees: dict[str, Path | None] = {"this tree": None, **{str(tree): tree.resolve() for tree in args.tree}}
    runs: dict[str, tuple[Counter[str], float, int]] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="base-runner-profile-") as folder:
        _install_challenges(Path(folder) / "site")
        for _ in range(args.rounds):
            for name, tree in trees.items():
                samples, cpu, writes = profile(Path(folder), tree, args.seconds, args.connections)
                before = runs.get(name, (Counter(), 0.0, 0))
                runs[name] = (before[0] + samples, before[1] + cpu, before[2] + writes)
    print(table(runs))
    print(
        f"\n{args.rounds} runs of {args.seconds} s each, {args.connections} connections; "
        f"load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    )


if __name__ == "__main__":
    main()
