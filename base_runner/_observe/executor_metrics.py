"""The executor's Prometheus families: its counts read when scraped, each run's duration as it ends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .._executor.service import Counts, Executor

# From a container that exits at once (about a second with the engine's own work) to an hour's evaluation.
_RUN_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


def watch_executor(registry: CollectorRegistry, executor: Executor) -> None:
    """Expose ``executor``'s runs in ``registry``: started, running, finished by outcome, and their durations."""
    from .._executor.service import OUTCOMES

    seconds = Histogram(
        "base_runner_executor_run_duration_seconds",
        "Time an executor run took, from the call to its result, by outcome.",
        ["outcome"],
        buckets=_RUN_BUCKETS,
        registry=registry,
    )
    for outcome in OUTCOMES:
        seconds.labels(outcome)
    registry.register(_Counts(executor.counts))

    def ended(outcome: str, elapsed: float | None) -> None:
        if elapsed is not None:
            seconds.labels(outcome).observe(elapsed)

    executor.listeners.append(ended)


class _Counts(Collector):
    def __init__(self, counts: Counts) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Any]:
        counts = self._counts
        yield CounterMetricFamily(
            "base_runner_executor_runs_started", "Executor runs asked for, refused ones included.", value=counts.started
        )
        yield GaugeMetricFamily("base_runner_executor_runs_running", "Executor runs under way.", value=counts.running)
        finished = CounterMetricFamily(
            "base_runner_executor_runs_finished",
            "Executor runs ended, by outcome: ok, nonzero, timed_out, refused, backend_error, cancelled.",
            labels=["outcome"],
        )
        for outcome, count in counts.finished.items():
            finished.add_metric([outcome], count)
        yield finished
