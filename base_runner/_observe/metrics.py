"""Prometheus metrics of one app, in prometheus-client's registry, for ``/internal/v1/metrics``.

The same registry can also be served on a port of its own (:class:`MetricsPort`,
``CHALLENGE_METRICS_PORT``) as ``GET /metrics`` without a token, for a
scraper on the node. That port is a second uvicorn server on the app's
event loop, not prometheus-client's threaded server: :class:`_StateCollector`
reads the runtime's states, the weights cache and the database's URL, which
only the loop's thread changes, so every scrape runs where the token-guarded
one does. The cost is that a stalled loop answers neither; the watchdog
reports a stall in the log and on ``/ready`` instead.

Per-request work is one cached lookup and two updates; everything that
can be read when scraped (cache age, part states, file sizes) is read
then, by :class:`_StateCollector`, and costs the hot path nothing. Labels
are route templates, methods from a fixed set, status codes, outcomes and
the names the code gives its parts: never raw paths or hotkeys.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    make_asgi_app,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .._core.errors import ConfigError

if TYPE_CHECKING:
    import asyncio

    import uvicorn

    from .._core.runtime import Runtime
    from .._jobs.scheduler import JobEvent, Scheduler
    from .._push.pusher import Attempt
    from .._storage.db import Database
    from .._weights.weights import Validated, WeightsCache

log = logging.getLogger("base_runner")

#: Where the master (or a scraper with its token) reads the metrics.
PATH = "/internal/v1/metrics"
#: The one path of the separate metrics port, where Prometheus looks by default.
PORT_PATH = "/metrics"
#: Methods counted under their own name; anything else is ``other``, so a client cannot add label values.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# From a cached weights answer (~0.1 ms) to a slow write.
_REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# get_weights runs up to CHALLENGE_WEIGHTS_TIMEOUT (8 s by default) under the master's 10 s.
_WEIGHTS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 6, 8, 10, 15, 30)
_WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30)
# A job attempt: from a no-op to an hours-long evaluation.
_ATTEMPT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400)
#: The job events counted, each as ``base_runner_jobs_<kind>_total`` by task.
JOB_EVENTS = {
    "enqueued": "Jobs enqueued (counted once their transaction committed), by task.",
    "started": "Job attempts started, by task.",
    "succeeded": "Jobs that succeeded, by task.",
    "failed": "Job attempts that failed (raised, timed out, or lost to a killed process), by task.",
    "retried": "Failed job attempts whose job will run again after its backoff, by task.",
    "dead": "Jobs that failed for good (attempts spent, Permanent, or a lost last lease), by task.",
    "cancelled": "Jobs cancelled by an operator, by task.",
    "requeued": "Running jobs put back at shutdown without spending their attempt, by task.",
    "takeover": "Expired leases of another (killed) process taken back, by task.",
}


class Metrics:
    """Every metric family of one app, in a registry of its own.

    :param runtime: the app's runtime: its challenge is named on ``base_runner_info``,
        and the ``weights`` and ``push`` parts report their state to it.
    :param version: the challenge package's version, on ``base_runner_info``.
    """

    def __init__(self, runtime: Runtime, version: str) -> None:
        from .._core.version import __version__

        self._runtime = runtime
        self.registry = CollectorRegistry()
        registry = self.registry
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        info = Gauge(
            "base_runner_info",
            "The challenge served and the versions; always 1.",
            ["challenge", "challenge_version", "runner_version"],
            registry=registry,
        )
        info.labels(runtime.challenge, version, __version__).set(1)
        self.requests = Counter(
            "base_runner_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "base_runner_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route template and method.",
            ["route", "method"],
            buckets=_REQUEST_BUCKETS,
            registry=registry,
        )
        self.get_weights_seconds = Histogram(
            "base_runner_get_weights_duration_seconds",
            "Time the challenge's get_weights took, validation included, by outcome: ok, error or timeout.",
            ["outcome"],
            buckets=_WEIGHTS_BUCKETS,
            registry=registry,
        )
        for outcome in ("ok", "error", "timeout"):
            self.get_weights_seconds.labels(outcome)
        self.dropped = Counter(
            "base_runner_weights_dropped_entries",
            "Weights entries get_weights returned that validation left out.",
            registry=registry,
        )
        self.last_weights = Gauge(
            "base_runner_get_weights_last_timestamp_seconds",
            "UNIX time the last get_weights call ended, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.writer_wait = Histogram(
            "base_runner_db_writer_wait_seconds",
            "Time a session waited for the one writer connection (the write lock).",
            buckets=_WAIT_BUCKETS,
            registry=registry,
        )
        self.transactions = Counter(
            "base_runner_db_write_transactions",
            "Transactions on the writer connection, by outcome: commit or rollback.",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("commit", "rollback"):
            self.transactions.labels(outcome)
        self.pushes = Counter(
            "base_runner_push_steps",
            "Steps of the pusher, by outcome (acknowledged, unavailable, refused, current, ...) and HTTP status.",
            ["outcome", "status"],
            registry=registry,
        )
        self.last_push = Gauge(
            "base_runner_push_last_ok_timestamp_seconds",
            "UNIX time of the pusher's last step after which the master held the current weights.",
            registry=registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request; ``route`` must be a template, never a raw path."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            shown = method if method in METHODS else "other"
            children = (self.requests.labels(route, shown, str(status)), self.request_seconds.labels(route, shown))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def push_step(self, attempt: Attempt) -> None:
        """Count one step of the pusher; the ``push`` part is up while its steps succeed."""
        self.pushes.labels(attempt.outcome, str(attempt.status or "none")).inc()
        if attempt.ok:
            self.last_push.set(time.time())
        self._runtime.mark("push", attempt.outcome, ok=attempt.ok)

    def timed_weights(
        self, compute: Callable[[], Awaitable[Validated]], timeout: float
    ) -> Callable[[], Awaitable[Validated]]:
        """``compute``, timed and counted by outcome, its dropped entries counted.

        A computation that runs past ``timeout`` (the callers got 504) counts
        as ``timeout`` whatever it ends with, and the ``weights`` part is
        marked down the moment it passes the limit, even if it never ends.
        """
        import asyncio

        async def timed() -> Validated:
            started = time.perf_counter()
            late = asyncio.get_running_loop().call_later(timeout, self._runtime.mark, "weights", "timeout", False)
            outcome = "error"
            try:
                validated = await compute()
                outcome = "ok"
            finally:
                late.cancel()
                seconds = time.perf_counter() - started
                if seconds >= timeout:
                    outcome = "timeout"
                self.get_weights_seconds.labels(outcome).observe(seconds)
                self.last_weights.labels(outcome).set(time.time())
                self._runtime.mark("weights", outcome, ok=outcome == "ok")
            self.dropped.inc(len(validated.dropped))
            return validated

        return timed

    def watch(self, cache: WeightsCache, db: Database) -> None:
        """Read the runtime, ``cache`` and ``db`` at each scrape, and time the writer's waits."""
        self.registry.register(_StateCollector(self._runtime, cache, db))
        db.on_writer_wait = self.writer_wait.observe

    def watch_jobs(self, scheduler: Scheduler) -> None:
        """Count ``scheduler``'s events and time its attempts; read its queue at each scrape."""
        counters = {
            kind: Counter(f"base_runner_jobs_{kind}", description, ["task"], registry=self.registry)
            for kind, description in JOB_EVENTS.items()
        }
        seconds = Histogram(
            "base_runner_job_attempt_duration_seconds",
            "Time job attempts ran, by task and outcome (succeeded, retried, dead, cancelled, requeued).",
            ["task", "outcome"],
            buckets=_ATTEMPT_BUCKETS,
            registry=self.registry,
        )

        def observe(happened: JobEvent) -> None:
            counters[happened.kind].labels(happened.task).inc()
            if happened.attempt_failed:
                counters["failed"].labels(happened.task).inc()
            if happened.seconds is not None:
                seconds.labels(happened.task, happened.kind).observe(happened.seconds)

        scheduler.observers.append(observe)
        self.registry.register(_JobsCollector(scheduler))

    def count_transactions(self, db: Database) -> Callable[[], None]:
        """Count commits and rollbacks on ``db``'s writer; returns the function that stops it."""
        from sqlalchemy import event

        engine = db.engine.sync_engine
        commits, rollbacks = self.transactions.labels("commit"), self.transactions.labels("rollback")

        def on_commit(_conn: Any) -> None:
            commits.inc()

        def on_rollback(_conn: Any) -> None:
            rollbacks.inc()

        event.listen(engine, "commit", on_commit)
        event.listen(engine, "rollback", on_rollback)

        def stop() -> None:
            event.remove(engine, "commit", on_commit)
            event.remove(engine, "rollback", on_rollback)

        return stop

    def exposition(self) -> tuple[bytes, str]:
        """The text format body and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _file_size(path: Path) -> float:
    try:
        return float(os.stat(path).st_size)
    except OSError:
        return 0.0


class _StateCollector(Collector):
    """What is read when scraped: the weights cache, each part's state, the database files."""

    def __init__(self, runtime: Runtime, cache: WeightsCache, db: Database) -> None:
        self._runtime, self._cache, self._db = runtime, cache, db

    def collect(self) -> Iterator[Any]:
        cache = self._cache
        yield CounterMetricFamily(
            "base_runner_weights_cache_hits", "Weights answers served from the cache.", value=cache.hits
        )
        yield CounterMetricFamily(
            "base_runner_weights_cache_misses", "Weights answers that needed a get_weights call.", value=cache.misses
        )
        age = cache.age()
        yield GaugeMetricFamily(
            "base_runner_weights_cache_age_seconds",
            "Age of the cached weights body; -1 before the first computation.",
            value=-1.0 if age is None else age,
        )
        up = GaugeMetricFamily(
            "base_runner_part_up", "1 when the part works, 0 when it does not, by part.", labels=["part", "state"]
        )
        since = GaugeMetricFamily(
            "base_runner_part_since_timestamp_seconds", "UNIX time the part entered its state.", labels=["part"]
        )
        for part, state in sorted(self._runtime.states.items()):
            up.add_metric([part, state.name], 1.0 if state.ok else 0.0)
            since.add_metric([part], state.since)
        yield up
        yield since
        yield CounterMetricFamily(
            "base_runner_db_commits",
            "COMMITs of the writer connection; fewer than committed transactions when they are grouped.",
            value=self._db.commits,
        )
        path = Path(self._db.engine.url.database or "")
        size = GaugeMetricFamily("base_runner_sqlite_file_bytes", "Size of the SQLite files.", labels=["file"])
        size.add_metric(["database"], _file_size(path))
        size.add_metric(["wal"], _file_size(path.with_name(path.name + "-wal")))
        yield size


class _JobsCollector(Collector):
    """The queue as the scheduler last counted it (every third of a lease): depth and the oldest due job's wait."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    def collect(self) -> Iterator[Any]:
        depth = GaugeMetricFamily(
            "base_runner_jobs_queue_depth",
            "Queued, running and dead jobs, by task and state.",
            labels=["task", "state"],
        )
        for (task, state), count in sorted(self._scheduler.depth.items()):
            depth.add_metric([task, state], float(count))
        yield depth
        oldest = GaugeMetricFamily(
            "base_runner_jobs_oldest_due_seconds",
            "Seconds the longest-waiting due job has waited since it became due, by task (0: none waits).",
            labels=["task"],
        )
        for task in sorted(self._scheduler.tasks):
            oldest.add_metric([task], self._scheduler.oldest_due.get(task, 0.0))
        yield oldest


async def endpoint(metrics: Metrics, check: Callable[[Any], None], request: Any) -> Any:
    """The ``/internal/v1/metrics`` answer: the text format, or the refusal ``check`` raised."""
    from starlette.responses import Response

    check(request.headers)
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)


class MetricsPort:
    """The separate metrics port: ``GET /metrics`` with no token, every other path 404.

    The socket is bound when this is made, so that ``serve`` refuses a port
    in use (:class:`~base_runner.ConfigError`, exit 2) before the
    database is opened or any challenge code runs; it answers from
    :meth:`start` until :meth:`stop` closes it.

    :param http: uvicorn's ``http`` protocol: ``serve`` passes the one with
        its connection limits, so a slow client cannot hold this port either.
    """

    def __init__(self, host: str, port: int, http: type[asyncio.Protocol] | str = "auto") -> None:
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
            self._socket = socket.create_server((host, port), family=family)
        except OSError as exc:
            # create_server's message repeats the address; the errno's own text does not.
            reason = os.strerror(exc.errno) if exc.errno and not isinstance(exc, socket.gaierror) else str(exc)
            raise ConfigError(
                f"CHALLENGE_METRICS_PORT: cannot listen on {_url(host, port, '')}: {reason}; "
                "free the port, choose another one, or fix CHALLENGE_METRICS_HOST"
            ) from None
        self.url = _url(host, port, PORT_PATH)
        self._http = http
        self._server: uvicorn.Server | None = None

    async def start(self, metrics: Metrics) -> None:
        """Answer scrapes of ``metrics`` on the bound socket."""
        import uvicorn

        config = uvicorn.Config(
            _port_app(metrics.registry),
            http=self._http,
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            timeout_graceful_shutdown=1,
        )
        config.load()
        server = uvicorn.Server(config)
        # startup() and shutdown() rather than serve(): serve() would take over
        # the process's signal handlers, which belong to the main server, and
        # set the lifespan (off here) that startup() expects.
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[self._socket])
        self._server = server
        log.info("metrics on %s, without a token: publish this port to the node only", self.url)

    async def stop(self) -> None:
        """Close the port and its connections; the socket too if it never served."""
        if self._server is not None:
            await self._server.shutdown(sockets=[self._socket])
            self._server = None
        self._socket.close()


def _url(host: str, port: int, path: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{path}" if path else f"{shown}:{port}"


def _port_app(registry: CollectorRegistry) -> Callable[..., Awaitable[None]]:
    """prometheus-client's ASGI exposition (text or OpenMetrics, gzip as asked) on :data:`PORT_PATH` alone."""
    from starlette.responses import PlainTextResponse

    exposition = make_asgi_app(registry)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] != PORT_PATH:
            answer = PlainTextResponse(f"not found: this port serves GET {PORT_PATH} only\n", status_code=404)
        elif scope["method"] not in ("GET", "HEAD"):
            answer = PlainTextResponse(
                f"method not allowed: {PORT_PATH} answers GET\n", status_code=405, headers={"Allow": "GET, HEAD"}
            )
        else:
            await exposition(scope, receive, send)
            return
        await answer(scope, receive, send)

    return app
