"""What every backend is given and must do."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from .policy import CheckedMount
from .spec import RunResult, RunSpec


@dataclass(frozen=True)
class Prepared:
    """A checked spec with everything the runner adds: the container's name, its labels, its mounts resolved."""

    spec: RunSpec
    mounts: tuple[CheckedMount, ...]
    timeout: float
    #: The container's name, and the broker's ``job_id``: unique to this run.
    name: str
    labels: Mapping[str, str]
    log_limit: int


class Backend(Protocol):
    """Runs containers, removes the stale ones, and says whether it is reachable."""

    #: ``docker``, ``broker``, or ``recorder`` (the authors' test fixture).
    kind: str

    async def run(self, prepared: Prepared) -> RunResult:
        """Run to the end or the timeout; on cancellation, remove the container before re-raising."""
        ...

    async def remove_stale(self, labels: Mapping[str, str], instance_label: str, instance: str) -> int:
        """Remove the containers carrying every one of ``labels`` whose ``instance_label`` is not ``instance``."""
        ...

    async def problem(self) -> str | None:
        """``None`` when the backend answers; else why not, in one line."""
        ...

    async def close(self) -> None: ...


def tail(data: bytes | str, limit: int) -> str:
    """The last ``limit`` bytes of ``data``, as text (a cut character becomes U+FFFD)."""
    raw = data.encode(errors="replace") if isinstance(data, str) else data
    return raw[-limit:].decode(errors="replace")
