"""Prometheus metrics of one app, in prometheus-client's registry, for ``/internal/v1/metrics``.

The same registry is also served on a port of its own when asked
(:mod:`.port`). The metrics observe the parts: they count the events the
database, the weights part, the pusher and the jobs tell them of, and read
the rest (cache age, part states, file sizes) when scraped, by
:class:`_StateCollector`, which costs the hot path nothing. Per-request work
is one cached lookup and two updates. Labels are route templates, methods
from a fixed set, status codes, outcomes and the names the code gives its
parts: never raw paths or hotkeys.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
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
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .._core.runtime import Runtime
    from .._jobs.scheduler import JobEvent, Scheduler
    from .._push.attempt import Attempt
    from .._storage.db import Database, WriterEvent
    from .._weights.weights import Computed, WeightsCache

log = logging.getLogger("base_runner")

#: Where the master (or a scraper with its token) reads the metrics.
PATH = "/internal/v1/metrics"
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

    :param runtime: the app's runtime: its challenge is named on ``base_runner_info``, and its parts'
        states are read at each scrape (the parts write them, never the metrics).
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
        for families in (self._requests, self._weights, self._database, self._pusher):
            families(registry)
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _requests(self, registry: CollectorRegistry) -> None:
        """The families of the HTTP requests."""
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

    def _weights(self, registry: CollectorRegistry) -> None:
        """The families of the ``get_weights`` computations."""
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

    def _database(self, registry: CollectorRegistry) -> None:
        """The families of the writer connection."""
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

    def _pusher(self, registry: CollectorRegistry) -> None:
        """The families of the pusher's steps."""
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

    def push_stepped(self, attempt: Attempt) -> None:
        """Count one step of the pusher."""
        self.pushes.labels(attempt.outcome, str(attempt.status or "none")).inc()
        if attempt.ok:
            self.last_push.set(time.time())

    def weights_computed(self, computed: Computed) -> None:
        """Time and count one ``get_weights`` computation by outcome, and the entries validation dropped."""
        self.get_weights_seconds.labels(computed.outcome).observe(computed.seconds)
        self.last_weights.labels(computed.outcome).set(time.time())
        if computed.validated is not None:
            self.dropped.inc(len(computed.validated.dropped))

    def watch(self, cache: WeightsCache, db: Database) -> None:
        """Read the runtime, ``cache`` and ``db``'s files at each scrape."""
        self.registry.register(_StateCollector(self._runtime, cache, db))

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

    def observe_database(self, db: Database) -> Callable[[], None]:
        """Count the commits and rollbacks on ``db``'s writer and time its waits; returns the function that stops it."""
        commits, rollbacks = self.transactions.labels("commit"), self.transactions.labels("rollback")
        counted = {"commit": commits.inc, "rollback": rollbacks.inc}

        def observe(event: WriterEvent) -> None:
            if event.kind == "wait":
                self.writer_wait.observe(event.seconds)
            else:
                counted[event.kind]()

        return db.events.subscribe(observe)

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
