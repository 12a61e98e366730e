"""The authors' stand-in for Docker: it records each run the rules let through and answers what the test gave."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .backend import Prepared
from .spec import RunResult, RunSpec


@dataclass(frozen=True)
class RecordedRun:
    """One run the challenge asked for, after the runner's checks."""

    spec: RunSpec
    timeout: float
    #: Each mount's target in the container, and its folder on the data volume: write a writable one's
    #: files here from a reply, as the container would.
    mounts: Mapping[str, Path]
    #: The labels the runner adds (the job, its attempt) with the spec's own.
    labels: Mapping[str, str]


Reply = RunResult | Callable[[RecordedRun], RunResult]


class ExecutorRecorder:
    """What :func:`base_runner.testing.executor_recorder` gives a test.

    ``runs`` holds every run in order. :meth:`reply` queues what the next runs answer;
    with nothing queued a run answers ``RunResult(0, "", "")``.
    """

    kind = "recorder"

    def __init__(self) -> None:
        self.runs: list[RecordedRun] = []
        self.allowed_images: tuple[str, ...] = ()
        self._replies: deque[Reply] = deque()

    def reply(self, *replies: Reply) -> None:
        """Queue answers, each a :class:`~base_runner.executor.RunResult` or a function of the :class:`RecordedRun`."""
        self._replies.extend(replies)

    async def run(self, prepared: Prepared) -> RunResult:
        recorded = RecordedRun(
            spec=prepared.spec,
            timeout=prepared.timeout,
            mounts={mount.target: mount.source for mount in prepared.mounts},
            labels=dict(prepared.labels),
        )
        self.runs.append(recorded)
        reply = self._replies.popleft() if self._replies else RunResult(0, "", "")
        return reply(recorded) if callable(reply) else reply

    async def remove_stale(self, labels: Mapping[str, str], instance_label: str, instance: str) -> int:
        return 0

    async def problem(self) -> str | None:
        return None

    async def close(self) -> None:
        pass
