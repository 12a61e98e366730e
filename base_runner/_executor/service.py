"""The executor of one runner process: the rules, the backend the settings choose, the labels, the counts."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .._storage import durable
from .backend import Backend, Prepared
from .policy import CheckedMount, check
from .spec import (
    DEFAULT_TIMEOUT,
    LOG_LIMIT_BYTES,
    BackendError,
    BackendUnavailable,
    RunRefused,
    RunResult,
    RunSpec,
)

log = logging.getLogger("base_runner")

#: How a finished run is counted.
OUTCOMES = ("ok", "nonzero", "timed_out", "refused", "backend_error", "cancelled")


@dataclass(frozen=True)
class Attempt:
    """The job attempt a run belongs to: its containers are labelled with it."""

    job_id: str
    attempt: int
    task: str


#: Set by the jobs scheduler around each attempt; ``None`` outside a job.
current_attempt: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar("executor_attempt", default=None)


@contextmanager
def attempt_scope(attempt: Attempt) -> Iterator[None]:
    """Runs started inside are labelled with ``attempt``."""
    token = current_attempt.set(attempt)
    try:
        yield
    finally:
        current_attempt.reset(token)


@dataclass
class Counts:
    """What the executor did, read by the status page and the metrics; only the executor writes it."""

    started: int = 0
    running: int = 0
    finished: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    last_problem: str | None = None


#: Called with ``("started", None)`` when a run starts, and its outcome and duration in seconds when it ends.
Listener = Callable[[str, float | None], None]


class Executor:
    """Checks a spec, labels it, and hands it to ``backend``."""

    def __init__(
        self,
        backend: Backend,
        *,
        slug: str,
        data_dir: Path,
        allowed_images: Sequence[str],
        protected: Sequence[Path] = (),
        log_limit: int = LOG_LIMIT_BYTES,
    ) -> None:
        self.backend = backend
        self.slug = slug
        self.data_dir = data_dir
        self.allowed_images = tuple(allowed_images)
        self.protected = tuple(protected)
        self.log_limit = log_limit
        #: This process's mark on its containers: any other, on this challenge's, is a dead process's.
        self.instance = secrets.token_hex(8)
        self.counts = Counts()
        self.listeners: list[Listener] = []

    @property
    def owner_labels(self) -> dict[str, str]:
        """The labels that make a container this challenge's, run by a base-runner."""
        return {"base.challenge": self.slug, "base.executor": "base-runner"}

    @property
    def instance_label(self) -> str:
        return "base.runner"

    def prepare(self, spec: RunSpec, timeout: float) -> Prepared:
        """Check ``spec`` against the rules; refuse it, or return it with the runner's labels and name."""
        # The authors' recorder may add images for a test; no real backend has any to add.
        allowed = self.allowed_images + getattr(self.backend, "allowed_images", ())
        mounts = check(spec, timeout, data_dir=self.data_dir, allowed_images=allowed, protected=self.protected)
        attempt = current_attempt.get()
        reserved = sorted(key for key in spec.labels if key.startswith(("base.", "platform.")))
        if reserved:
            raise RunRefused(f"labels under 'base.' and 'platform.' are the masters': {', '.join(reserved)}")
        run_id = secrets.token_hex(4)
        ours = {**self.owner_labels, self.instance_label: self.instance, "base.run": run_id}
        if attempt is not None:
            ours |= {"base.job": attempt.job_id, "base.attempt": str(attempt.attempt), "base.task": attempt.task}
        name = spec.name or "-".join(
            _fragment(part) for part in (self.slug, attempt.job_id[:12] if attempt else "run", run_id)
        )
        return Prepared(
            spec=spec,
            mounts=mounts,
            timeout=timeout,
            name=name,
            labels={**spec.labels, **ours},
            log_limit=self.log_limit,
        )

    async def run(self, spec: RunSpec, timeout: float = DEFAULT_TIMEOUT) -> RunResult:
        started = time.monotonic()
        outcome = "backend_error"
        self.counts.started += 1
        self.counts.running += 1
        self._tell("started", None)
        try:
            prepared = self.prepare(spec, timeout)
            result = await self.backend.run(prepared)
            # What the run wrote into its writable mounts is on disk before the challenge acts on the result.
            await asyncio.to_thread(_sync_outputs, prepared.mounts, self.data_dir)
            outcome = "timed_out" if result.timed_out else "ok" if result.returncode == 0 else "nonzero"
            return result
        except RunRefused as exc:
            outcome = "refused"
            log.warning("executor: run of %s refused: %s", getattr(spec, "image", spec), exc)
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as exc:
            # A BackendError says what failed; anything else is counted with them, named by its type.
            self.counts.last_problem = str(exc) if isinstance(exc, BackendError) else f"{type(exc).__name__}: {exc}"
            log.error("executor: run of %s failed: %s", spec.image, self.counts.last_problem)
            raise
        finally:
            self.counts.running -= 1
            self.counts.finished[outcome] += 1
            self._tell(outcome, time.monotonic() - started)

    def _tell(self, event: str, elapsed: float | None) -> None:
        for listener in self.listeners:
            listener(event, elapsed)

    async def remove_stale(self) -> int:
        """Remove this challenge's containers that no attempt of this process runs: a dead process's."""
        removed = await self.backend.remove_stale(self.owner_labels, self.instance_label, self.instance)
        if removed:
            log.info("executor: removed %d container(s) left by a runner that stopped during a run", removed)
        return removed

    async def problem(self) -> str | None:
        problem = await self.backend.problem()
        self.counts.last_problem = problem or self.counts.last_problem
        return problem


def _sync_outputs(mounts: Sequence[CheckedMount], data_dir: Path) -> None:
    for mount in mounts:
        if not mount.read_only and mount.source.is_dir():
            durable.sync_tree(mount.source, data_dir.resolve())


def _fragment(value: str) -> str:
    safe = "".join(ch if ch.isalnum() else "-" for ch in value.lower()).strip("-")
    return (safe or "x")[:48]


_installed: Executor | None = None


def install(executor: Executor | None) -> Executor | None:
    """Make ``executor`` the one :func:`installed` returns; returns the one it replaces."""
    global _installed
    previous, _installed = _installed, executor
    return previous


def installed() -> Executor:
    """The executor of this process; a clear error outside a runner."""
    if _installed is None:
        raise BackendUnavailable(
            "the executor is not set up: it runs inside `base-runner serve` (or the base_runner.testing fixtures, "
            "where the `executor_recorder` fixture stands in for Docker)"
        )
    return _installed
