"""``python -m bench``: base-runner's performance figures, each as a ratio to a baseline measured in the same run.

Data sets, data dirs and logs live in a temporary folder that is removed at
the end. Servers listen on 127.0.0.1 only; every load run is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from base_runner._core.settings import DATABASE_FILE

from . import datasets, load, queries, servers
from .report import Figure, figures_table, plot, table

#: Hotkeys in the data sets, and entries in the weights body: a subnet's 256 UIDs.
HOTKEYS = 256
INTERNAL = "/internal/v1/get_weights"
#: The plot's lines: what queries.measure returns, by the label drawn.
PLOTTED = {"group_by": "GROUP BY (raw)", "skip_scan": "skip-scan (raw)", "example": "example get_weights (runner)"}
EXAMPLE = servers.ROOT / "plugins" / "example"
BOUNTY = servers.ROOT / "plugins" / "bounty"
JOBS_PLUGIN = servers.ROOT / "bench" / "jobs_plugin"
BOUNTY_ENV = {"CHALLENGE_OWNER_TOKEN": "bench-owner-token"}
BARE = ("--lifespan", "off", "--no-access-log", "--log-level", "warning")
# POST /submissions as miners would send them: 256 hotkeys, varying scores.
POST_SCRIPT = """
local counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{"hotkey":"5BenchHotkey%03d","score":%d}', counter % 256, counter % 1000)
  return wrk.format("POST", "/submissions", {["Content-Type"] = "application/json"}, body)
end
"""


NORMAL_RUNNER = "the runner, CHALLENGE_SYNCHRONOUS=NORMAL (opt-in)"
RUNNER = "the runner (example challenge)"
RAW_ROUTE = "the same FastAPI route on one raw sqlite3 connection"
#: The connection counts the writes are measured at: a few clients, and a crowd.
CONNECTIONS = (8, 64)
HUEY = "huey, SqliteStorage(fsync=True), 4 consumer threads polling every 1 ms,"
#: The runner's jobs at the same concurrency as huey's consumer threads. On a busy machine the loop
#: can stall past the watchdog's 2 s, and the runner then refuses writes until it is ready again:
#: that is the watchdog's job, not what this step measures.
JOBS_ENV = {"CHALLENGE_JOBS_CONCURRENCY": "4", "CHALLENGE_LOOP_STALL": "60"}
#: Seconds between the jobs whose enqueue-to-start latency is measured.
JOBS_GAP = 0.01
#: The cached weights step's load runs, by key, with the name each is shown under.
WEIGHTS_RUNS = {
    "bare": "bare ASGI app",
    "public": "/weights",
    "internal": INTERNAL,
    "logged public": "/weights, CHALLENGE_ACCESS_LOG=true",
    "logged internal": f"{INTERNAL}, CHALLENGE_ACCESS_LOG=true",
}


@dataclass(frozen=True)
class Plan:
    """How much to measure."""

    sizes: tuple[int, ...]
    hotkey_counts: tuple[int, ...]
    hotkey_rows: int
    seconds: int
    rounds: int
    repeats: int
    starts: int
    stacks: bool
    #: No-op jobs timed to the last one's end, and jobs timed from enqueue to start.
    jobs: tuple[int, int]


FULL = Plan(
    (10**4, 10**5, 10**6),
    (16, 256, 4096, 65536),
    10**5,
    seconds=5,
    rounds=3,
    repeats=15,
    starts=5,
    stacks=True,
    jobs=(1000, 200),
)
# Proves the harness works, in seconds; its figures mean nothing.
QUICK = Plan((1000,), (16, 256), 1000, seconds=1, rounds=1, repeats=2, starts=1, stacks=False, jobs=(20, 10))


class Bench:
    """One run: the plan, its temporary folder, and what it measured."""

    def __init__(self, plan: Plan, tmp: Path) -> None:
        self.plan = plan
        self.tmp = tmp
        self.log = tmp / "servers.log"
        self.figures: list[Figure] = []
        self.sections: list[str] = []
        self.by_rows: dict[str, dict[int, float]] = {}
        self.by_hotkeys: dict[str, dict[int, float]] = {}

    def say(self, message: str) -> None:
        print(f"bench: {message}", file=sys.stderr, flush=True)

    def median_ratio(self, pairs: list[tuple[float, float]]) -> float:
        return statistics.median(value / baseline for value, baseline in pairs)

    # -- get_weights against raw SQLite -------------------------------------------------

    def weights_queries(self) -> None:
        rows = []
        for size in self.plan.sizes:
            self.say(f"get_weights on {size:,} submissions")
            names = ["group_by", "skip_scan"] + (["naive"] if size <= 10**5 else [])
            path = datasets.build(self.tmp / f"rows-{size}.sqlite3", size, HOTKEYS)
            ms = queries.measure(path, names, self.plan.repeats)
            path.unlink()
            best = min(names, key=ms.__getitem__)
            self.figures.append(
                Figure(
                    f"example `get_weights`, {size:,} submissions",
                    f"{ms['example']:.2f} ms",
                    f"best raw SQLite query ({best}) {ms[best]:.2f} ms",
                    ms["example"] / ms[best],
                    ("≤", 2.0) if size >= 10**6 else None,
                )
            )
            rows.append([f"{size:,}", *(f"{ms[n]:.2f}" if n in ms else "" for n in (*queries.RAW, "example"))])
            for name, label in PLOTTED.items():
                self.by_rows.setdefault(label, {})[size] = ms[name]
        self.sections.append(
            "get_weights, fastest of several runs, ms, 256 hotkeys:\n\n"
            + table(["submissions", "naive (raw)", "GROUP BY (raw)", "skip-scan (raw)", "example (runner)"], rows)
        )
        rows = []
        for count in self.plan.hotkey_counts:
            self.say(f"get_weights on {self.plan.hotkey_rows:,} submissions over {count:,} hotkeys")
            path = datasets.build(self.tmp / f"hotkeys-{count}.sqlite3", self.plan.hotkey_rows, count)
            ms = queries.measure(path, ["group_by", "skip_scan"], self.plan.repeats)
            path.unlink()
            rows.append([f"{count:,}", f"{ms['group_by']:.2f}", f"{ms['skip_scan']:.2f}", f"{ms['example']:.2f}"])
            for name, label in PLOTTED.items():
                self.by_hotkeys.setdefault(label, {})[count] = ms[name]
        self.sections.append(
            f"get_weights, fastest of several runs, ms, {self.plan.hotkey_rows:,} submissions:\n\n"
            + table(["hotkeys", "GROUP BY (raw)", "skip-scan (raw)", "example (runner)"], rows)
        )

    # -- cached weights over HTTP ----------------------------------------------------------

    def start(self, command: list[str], **env: str) -> servers.Server:
        return servers.start(command, self.log, env)

    def cached_weights(self) -> None:
        self.say("cached weights over HTTP")
        # The same runner twice, on data dirs of their own (one runner per data dir): without and
        # with CHALLENGE_ACCESS_LOG, which writes a JSON line per cached answer to the log file.
        runners: dict[str, servers.Server] = {}
        bare = None
        try:
            for name, env in (("runner", {}), ("logged", {"CHALLENGE_ACCESS_LOG": "true"})):
                data = self.tmp / ("weights-data" if name == "runner" else "weights-data-logged")
                data.mkdir()
                datasets.build(data / DATABASE_FILE, 10_000, HOTKEYS)
                runners[name] = self.start(servers.runner(data), **servers.runner_env(), **env)
            runner, logged = runners["runner"], runners["logged"]
            status, body = runner.get("/weights")
            assert status == 200, f"/weights answered {status}"
            # The same weights; only the body's computed_at differs.
            assert len(logged.get("/weights")[1]) == len(body)
            for server in runners.values():
                assert server.get(INTERNAL, servers.MASTER_HEADERS)[0] == 200
            (self.tmp / "body.json").write_bytes(body)
            bare = self.start(servers.uvicorn("bench.apps:bare", *BARE), BENCH_BODY=str(self.tmp / "body.json"))
            assert bare.get("/weights")[1] == body
            lines_before = _access_lines(self.log)
            runs: dict[str, list[load.Load]] = {key: [] for key in WEIGHTS_RUNS}
            for _ in range(self.plan.rounds):
                runs["bare"].append(load.run(bare.url + "/", bare.proc.pid, self.plan.seconds))
                for server, prefix in ((runner, ""), (logged, "logged ")):
                    runs[prefix + "public"].append(
                        load.run(server.url + "/weights", server.proc.pid, self.plan.seconds)
                    )
                    runs[prefix + "internal"].append(
                        load.run(
                            server.url + INTERNAL, server.proc.pid, self.plan.seconds, headers=servers.MASTER_HEADERS
                        )
                    )
        finally:
            for server in runners.values():
                server.stop()
            if bare is not None:
                bare.stop()
        lines = _access_lines(self.log) - lines_before
        base = statistics.median(run.per_second for run in runs["bare"])

        def against(key: str, baseline: str = "bare") -> float:
            return self.median_ratio(
                [(r.per_second, b.per_second) for r, b in zip(runs[key], runs[baseline], strict=True)]
            )

        for key, path in (("public", "/weights"), ("internal", INTERNAL)):
            errors = sum(run.errors for run in runs[key])
            self.figures.append(
                Figure(
                    f"`{path}` from cache, req/s, 8 connections" + (f", {errors} errors" if errors else ""),
                    f"{statistics.median(run.per_second for run in runs[key]):,.0f}",
                    f"bare ASGI app, same body ({len(body):,} bytes) {base:,.0f}",
                    against(key),
                    ("≥", 0.5),
                )
            )
        for key, path in (("public", "/weights"), ("internal", INTERNAL)):
            errors = sum(run.errors for run in runs["logged " + key])
            self.figures.append(
                Figure(
                    f"`{path}` from cache, `CHALLENGE_ACCESS_LOG=true`, req/s"
                    + (f", {errors} errors" if errors else ""),
                    f"{statistics.median(run.per_second for run in runs['logged ' + key]):,.0f}",
                    f"bare ASGI app {base:,.0f}",
                    against("logged " + key),
                )
            )
        rows = [
            [
                WEIGHTS_RUNS[key],
                f"{statistics.median(r.per_second for r in group):,.0f}",
                f"{statistics.median(r.server_cores for r in group):.2f}",
                f"{statistics.median(r.client_cores for r in group):.2f}",
                f"{statistics.median(r.server_us_per_request for r in group):.0f}",
                f"{statistics.median(r.client_us_per_request for r in group):.0f}",
                f"{statistics.median(r.p99_ms for r in group):.2f}",
            ]
            for key, group in runs.items()
        ]
        server = statistics.median(r.server_us_per_request for r in runs["bare"])
        client = statistics.median(r.client_us_per_request for r in runs["bare"])
        verdict = (
            "so with a core each, the server reaches its limit first: the server, not wrk, sets the pace"
            if client < server
            else "**so wrk, not the server, may set the pace: these throughput figures are not trustworthy**"
        )
        self.sections.append(
            "Who sets the pace (wrk: 1 thread, 8 connections; cores = CPU time / wall time):\n\n"
            + table(
                ["server", "req/s", "server cores", "wrk cores", "server µs CPU / req", "wrk µs CPU / req", "p99 ms"],
                rows,
            )
            + f"\n\nwrk spent {client:.0f} µs of CPU per request against the bare server's {server:.0f} µs, {verdict}."
        )
        requests = sum(r.requests for key in ("logged public", "logged internal") for r in runs[key])
        cpu = {
            key: statistics.median(
                logged.server_us_per_request - plain.server_us_per_request
                for logged, plain in zip(runs["logged " + key], runs[key], strict=True)
            )
            for key in ("public", "internal")
        }
        self.sections.append(
            "The access line's cost on cached weights: the runner with `CHALLENGE_ACCESS_LOG=true` "
            "(a JSON line per answer, to a file) against the same runner without it, median of the per-round "
            f"ratios: `/weights` {against('logged public', 'public'):.2f}x, "
            f"`{INTERNAL}` {against('logged internal', 'internal'):.2f}x of the throughput, "
            f"{cpu['public']:.0f} and {cpu['internal']:.0f} µs more server CPU per answer "
            f"({lines:,} access lines for {requests:,} answers counted by wrk)."
        )

    def stacks(self) -> None:
        """The runner's app under each uvicorn stack, against the bare app, to justify httptools and uvloop."""
        data = self.tmp / "weights-data"
        stacks = [
            ("h11", "asyncio", "off"),
            ("httptools", "asyncio", "off"),
            ("httptools", "uvloop", "off"),
            ("httptools", "uvloop", "on"),
        ]
        missing = [
            s for s in stacks if importlib.util.find_spec(s[0]) is None or importlib.util.find_spec(s[1]) is None
        ]
        started: dict[tuple[str, str, str], servers.Server] = {}
        runs: dict[tuple[str, str, str], list[tuple[load.Load, load.Load]]] = {}
        bare = self.start(servers.uvicorn("bench.apps:bare", *BARE), BENCH_BODY=str(self.tmp / "body.json"))
        try:
            for stack in stacks:
                if stack not in missing:
                    http, loop, access_log = stack
                    options = ["--http", http, "--loop", loop, "--log-level", "info"]
                    options.append("--access-log" if access_log == "on" else "--no-access-log")
                    # A copy each: a data dir takes one runner at a time.
                    copy = self.tmp / f"stack-{'-'.join(stack)}"
                    shutil.copytree(data, copy, ignore=shutil.ignore_patterns(".base-runner.lock"))
                    env = {"BENCH_DATA_DIR": str(copy), **servers.runner_env()}
                    started[stack] = self.start(servers.uvicorn("bench.apps:runner", *options), **env)
            # In turns, each against the bare app run just before it.
            for number in range(self.plan.rounds):
                self.say(f"the runner under each uvicorn stack, round {number + 1} of {self.plan.rounds}")
                for stack, runner in started.items():
                    base = load.run(bare.url + "/", bare.proc.pid, self.plan.seconds)
                    runs.setdefault(stack, []).append(
                        (load.run(runner.url + "/weights", runner.proc.pid, self.plan.seconds), base)
                    )
        finally:
            bare.stop()
            for runner in started.values():
                runner.stop()
        rows = [[*stack, "not installed", "", ""] for stack in missing]
        for stack, pairs in runs.items():
            rows.append(
                [
                    *stack,
                    f"{statistics.median(run.per_second for run, _ in pairs):,.0f}",
                    f"{self.median_ratio([(run.per_second, base.per_second) for run, base in pairs]):.2f}x",
                    "{:.2f}x".format(
                        self.median_ratio(
                            [(base.server_us_per_request, run.server_us_per_request) for run, base in pairs]
                        )
                    ),
                ]
            )
        self.sections.append(
            "`/weights` under each uvicorn stack, "
            "against the bare app (under uvicorn's defaults) run just before it:\n\n"
            + table(["http", "loop", "access log", "req/s", "throughput ratio", "CPU-per-request ratio"], rows)
        )

    # -- writes ------------------------------------------------------------------------------

    def writes(self) -> None:
        self.say("POST /submissions")
        script = self.tmp / "post.lua"
        script.write_text(POST_SCRIPT)
        pragmas = asyncio.run(_writer_pragmas(datasets.build(self.tmp / "pragmas.sqlite3", 0, 1)))
        raw = {"BENCH_PRAGMAS": pragmas}
        # Each server, with the connection counts it is loaded with: the runner and its baseline at both.
        servers_by_key = {
            RAW_ROUTE: (lambda n: (servers.uvicorn("bench.fastapi_writes:app", *BARE), raw), CONNECTIONS),
            RUNNER: (lambda n: (servers.runner(self._empty_dir(f"writes-{n}")), servers.runner_env()), CONNECTIONS),
            "bare ASGI app, raw sqlite3": (lambda n: (servers.uvicorn("bench.apps:raw_writes", *BARE), raw), (8,)),
            "the example's FastAPI route, SQLAlchemy's async defaults": (
                lambda n: (servers.uvicorn("bench.fastapi_writes:sqlalchemy_defaults", *BARE), raw),
                (8,),
            ),
            # The durability the default buys: FULL syncs each commit, the opt-in NORMAL does not.
            NORMAL_RUNNER: (
                lambda n: (
                    servers.runner(self._empty_dir(f"writes-normal-{n}")),
                    {**servers.runner_env(), "CHALLENGE_SYNCHRONOUS": "NORMAL"},
                ),
                (8,),
            ),
        }
        runs: dict[tuple[str, int], list[load.Load]] = {}
        started = 0
        for _ in range(self.plan.rounds):
            for connections in CONNECTIONS:
                for key, (command_and_env, counts) in servers_by_key.items():
                    if connections not in counts:
                        continue
                    started += 1
                    command, env = command_and_env(started)
                    # The raw baselines write here; the runner makes its own in its data dir.
                    database = datasets.build(self.tmp / f"writes-{started}.sqlite3", 0, 1)
                    server = self.start(command, BENCH_DATABASE=str(database), **env)
                    try:
                        runs.setdefault((key, connections), []).append(
                            load.run(
                                server.url + "/submissions",
                                server.proc.pid,
                                self.plan.seconds,
                                connections=connections,
                                script=script,
                            )
                        )
                    finally:
                        server.stop()
        for connections, target in zip(CONNECTIONS, (0.5, 0.8), strict=True):
            runner, baseline = runs[RUNNER, connections], runs[RAW_ROUTE, connections]
            errors = sum(run.errors for run in runner)
            pairs = list(zip(runner, baseline, strict=True))
            self.figures.append(
                Figure(
                    f"example `POST /submissions`, writes/s, {connections} connections, {errors} errors",
                    f"{statistics.median(r.per_second for r in runner):,.0f}",
                    f"{RAW_ROUTE} ({sum(b.errors for b in baseline)} errors) "
                    f"{statistics.median(r.per_second for r in baseline):,.0f}",
                    self.median_ratio([(r.per_second, b.per_second) for r, b in pairs]),
                    ("≥", target),
                )
            )
            self.figures.append(
                Figure(
                    f"example `POST /submissions` p99, {connections} connections",
                    f"{statistics.median(r.p99_ms for r in runner):.1f} ms",
                    f"{RAW_ROUTE} {statistics.median(r.p99_ms for r in baseline):.1f} ms",
                    self.median_ratio([(r.p99_ms, b.p99_ms) for r, b in pairs]),
                    ("≤", 2.0) if connections == 8 else None,
                )
            )
            self.figures.append(
                Figure(
                    f"example `POST /submissions`: server CPU per write, {connections} connections",
                    f"{statistics.median(r.server_us_per_request for r in runner):,.0f} µs",
                    f"{RAW_ROUTE} {statistics.median(r.server_us_per_request for r in baseline):,.0f} µs",
                    self.median_ratio([(r.server_us_per_request, b.server_us_per_request) for r, b in pairs]),
                    ("≤", 2.5) if connections == 8 else None,
                )
            )
        rows = [
            [
                key,
                str(connections),
                f"{statistics.median(r.per_second for r in group):,.0f}",
                f"{statistics.median(r.p50_ms for r in group):.1f}",
                f"{statistics.median(r.p99_ms for r in group):.1f}",
                str(sum(r.errors for r in group)),
                f"{statistics.median(r.server_us_per_request for r in group):,.0f}",
            ]
            for (key, connections), group in runs.items()
        ]
        normal, runner = runs[NORMAL_RUNNER, 8], runs[RUNNER, 8]
        full_cost = self.median_ratio([(n.per_second, f.per_second) for n, f in zip(normal, runner, strict=True)])
        self.sections.append(
            f"`POST /submissions`, writer settings {pragmas.replace('PRAGMA ', '')}:\n\n"
            + table(["server", "connections", "writes/s", "p50 ms", "p99 ms", "errors", "server µs CPU / write"], rows)
            + f"\n\nThe cost of `synchronous=FULL` (the default): the runner with the opt-in `NORMAL` does "
            f"{full_cost:.2f}x its writes per second at 8 connections."
        )
        self.trips()

    # -- jobs ---------------------------------------------------------------------------------

    def jobs(self) -> None:
        """No-op jobs: the runner's (``bench/jobs_plugin``, in ``serve``) against huey's, alternating."""
        self.say("jobs against huey")
        count, latency_count = self.plan.jobs
        runner_runs: list[tuple[float, list[float]]] = []
        huey_runs: list[tuple[float, list[float]]] = []
        for number in range(self.plan.rounds):
            data = self._empty_dir(f"jobs-{number}")
            server = self.start(servers.runner(data, slug="bench-jobs"), **servers.runner_env(), **JOBS_ENV)
            try:
                first = json.loads(server.post(f"/enqueue?count={count}"))["first"]
                finished = _wait_for_jobs(server, count)
                per_second = count / (max(finished) - first)
                server.post(f"/enqueue?count={latency_count}&gap={JOBS_GAP}")
                _wait_for_jobs(server, latency_count)
                runner_runs.append((per_second, json.loads(server.get("/stats")[1])["latencies"]))
            finally:
                server.stop()
            folder = self._empty_dir(f"huey-{number}")
            measured = subprocess.run(
                [sys.executable, "-m", "bench.huey_jobs", str(folder), str(count), str(latency_count)]
                + [str(JOBS_GAP), JOBS_ENV["CHALLENGE_JOBS_CONCURRENCY"]],
                env=servers.environment({}),
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )
            result = json.loads(measured.stdout)
            huey_runs.append((result["per_second"], result["latencies"]))

        def percentile(latencies: list[float], share: float) -> float:
            ordered = sorted(latencies)
            return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000

        pairs = list(zip(runner_runs, huey_runs, strict=True))
        self.figures.append(
            Figure(
                f"no-op jobs per second ({count} enqueued one by one, to the last one's end)",
                f"{statistics.median(r for r, _ in runner_runs):,.0f}",
                f"{HUEY} {statistics.median(h for h, _ in huey_runs):,.0f}",
                self.median_ratio([(r[0], h[0]) for r, h in pairs]),
                ("≥", 1.0),
            )
        )
        for share, name, target in ((0.5, "p50", None), (0.99, "p99", ("≤", 2.0))):
            self.figures.append(
                Figure(
                    f"job enqueue-to-start latency {name} ({latency_count} jobs, {JOBS_GAP * 1000:g} ms apart)",
                    f"{statistics.median(percentile(r[1], share) for r in runner_runs):.1f} ms",
                    f"{HUEY} {statistics.median(percentile(h[1], share) for h in huey_runs):.1f} ms",
                    self.median_ratio([(percentile(r[1], share), percentile(h[1], share)) for r, h in pairs]),
                    target,
                )
            )

    def trips(self) -> None:
        """Round trips to the driver's thread per request, counted by ``bench.trips`` in a process per challenge."""
        self.say("round trips to the driver's thread")
        counts: dict[str, float] = {}
        for slug in ("example", "bounty"):
            counted = subprocess.run(
                [sys.executable, "-m", "bench.trips", slug, str(self._empty_dir(f"trips-{slug}"))],
                env=servers.environment(BOUNTY_ENV),
                capture_output=True,
                text=True,
                check=True,
                timeout=300,
            )
            counts.update(json.loads(counted.stdout))
        for case, trips in counts.items():
            target = ("≤", 1.0) if case == "example `POST /submissions`" else None
            # Against 3 trips, the target's: one each for BEGIN IMMEDIATE, the INSERT and COMMIT.
            self.figures.append(
                Figure(f"{case}: round trips to the driver's thread", f"{trips:g}", "3", trips / 3, target)
            )

    # -- start and memory --------------------------------------------------------------------

    def cold_start(self) -> None:
        self.say("cold start and idle memory")
        # Each: the command and environment of its start number n.
        commands: dict[str, Callable[[int], tuple[list[str], dict[str, str]]]] = {
            "bare": lambda _: (servers.uvicorn("bench.apps:bare", *BARE), {}),
            "runner": lambda n: (servers.runner(self._empty_dir(f"cold-{n}")), servers.runner_env()),
            "bounty": lambda n: (
                servers.runner(self._empty_dir(f"bounty-{n}"), slug="bounty"),
                {**servers.runner_env(), **BOUNTY_ENV},
            ),
            "stand-in": lambda n: (
                servers.uvicorn("bench.standin:app", "--log-level", "warning"),
                {"BENCH_DATABASE": str(self._empty_dir(f"standin-{n}") / DATABASE_FILE), **BOUNTY_ENV},
            ),
        }
        started: dict[str, list[float]] = {key: [] for key in commands}
        cpu: dict[str, list[float]] = {key: [] for key in commands}
        rss: dict[str, list[float]] = {key: [] for key in commands}
        # The first start of each writes bytecode and fills the file cache: not counted.
        for number in range(self.plan.starts + 1):
            for key, command_and_env in commands.items():
                command, env = command_and_env(number)
                server = self.start(command, **env)
                try:
                    if key in ("bare", "runner"):
                        server.get("/weights")
                    time.sleep(0.5)
                    if number:
                        started[key].append(server.started_in * 1000)
                        cpu[key].append(server.started_cpu * 1000)
                        rss[key].append(server.rss_mb())
                finally:
                    server.stop()

        def figure(label: str, values: dict[str, list[float]], fmt: str, key: str, base: str, target: float) -> None:
            runner, baseline = statistics.median(values[key]), statistics.median(values[base])
            name = {"bare": "bare uvicorn app ", "stand-in": "the original bounty service's stand-in "}[base]
            ratio = self.median_ratio(list(zip(values[key], values[base], strict=True)))
            self.figures.append(Figure(label, fmt.format(runner), name + fmt.format(baseline), ratio, ("≤", target)))

        figure("start to first `/health` 200, empty data dir, create_all", started, "{:.0f} ms", "runner", "bare", 2.0)
        figure("idle RSS after one `/weights`", rss, "{:.1f} MiB", "runner", "bare", 2.0)
        figure(
            "bounty port: start to first `/health` 200, empty data dir", started, "{:.0f} ms", "bounty", "stand-in", 0.9
        )
        figure("bounty port: idle RSS after start", rss, "{:.1f} MiB", "bounty", "stand-in", 1.0)
        self.sections.append(
            f"Starts, median of {self.plan.starts} that alternate the four servers "
            "(CPU: what the process had used when it first answered):\n\n"
            + table(
                ["server", "start to first 200 ms", "CPU by then ms", "idle RSS MiB"],
                [
                    [
                        key,
                        f"{statistics.median(started[key]):.0f}",
                        f"{statistics.median(cpu[key]):.0f}",
                        f"{statistics.median(rss[key]):.1f}",
                    ]
                    for key in commands
                ],
            )
        )

    def _empty_dir(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir()
        return path


def _wait_for_jobs(server: servers.Server, count: int) -> list[float]:
    """The end times of the jobs the bench challenge ran, once there are ``count``."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        finished = json.loads(server.get("/stats")[1])["finished"]
        if len(finished) >= count:
            return finished
        time.sleep(0.05)
    raise RuntimeError(f"the runner ran fewer than {count} jobs in 300 s")


def _access_lines(log: Path) -> int:
    """The access lines the servers have written to ``log`` so far."""
    if not log.exists():
        return 0
    with log.open("rb") as lines:
        return sum(1 for line in lines if b'"logger": "base_runner.access"' in line)


async def _writer_pragmas(path: Path) -> str:
    """The settings of the runner's writer connection, for the raw baseline to use the same."""
    from base_runner import database

    database.configure(f"sqlite+aiosqlite:///{path}")
    try:
        async with database.engine.connect() as conn:
            values = [
                (name, (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar())
                for name in ("journal_mode", "synchronous")
            ]
    finally:
        await database.close()
    return ";".join(f"PRAGMA {name}={value}" for name, value in values)


def _install_challenges(site: Path) -> None:
    """Install this tree's example and bounty challenges into ``site``, for this process and the servers it starts.

    In a folder of its own, not the environment: a challenge installed there
    would change what base-runner's own tests see.
    """
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--target",
            str(site),
            str(EXAMPLE),
            str(BOUNTY),
            str(JOBS_PLUGIN),
        ],
        check=True,
    )
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="a tiny run that proves the harness works; its figures mean nothing"
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=servers.ROOT / "docs" / "performance.svg",
        help="where to draw the plot (.svg or .png)",
    )
    parser.add_argument(
        "--only",
        type=lambda value: value.split(","),
        default=["queries", "weights", "stacks", "writes", "jobs", "start"],
        metavar="STEPS",
        help="comma-separated steps to run: queries, weights, stacks (needs weights), writes, jobs, start; "
        "default: all",
    )
    args = parser.parse_args(argv)
    load.require_wrk()
    plan = QUICK if args.quick else FULL
    started, load_before = time.monotonic(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="base-runner-bench-") as folder:
        _install_challenges(Path(folder) / "site")
        bench = Bench(plan, Path(folder))
        steps = {
            "queries": bench.weights_queries,
            "weights": bench.cached_weights,
            "stacks": bench.stacks,
            "writes": bench.writes,
            "jobs": bench.jobs,
            "start": bench.cold_start,
        }
        for name, step in steps.items():
            if name in args.only and (name != "stacks" or plan.stacks):
                step()
    print(figures_table(bench.figures))
    for section in bench.sections:
        print(f"\n{section}")
    if not args.quick and "queries" in args.only:
        print(f"\n{plot(args.plot, bench.by_rows, bench.by_hotkeys, plan.hotkey_rows)}")
    print(
        f"\n{len(bench.figures)} figures in {time.monotonic() - started:.0f} s on {os.cpu_count()} cores; "
        f"load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    )


if __name__ == "__main__":
    main()
