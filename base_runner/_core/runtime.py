"""What the running process knows about itself: its named checks, ready or not and why, or dead."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from .wire import HealthCheck
from .wire import check as health_check

log = logging.getLogger("base_runner")

#: The checks every runner reports, in the order ``/health`` lists them.
BUILTIN_CHECKS = ("lifespan", "database", "schema", "workers")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def _check_name(key: str) -> str:
    """The check a problem key belongs to: ``"disk:full"`` → ``disk``."""
    name = key.partition(":")[0].lower()
    return name if _NAME.fullmatch(name) else re.sub(r"[^a-z0-9_-]", "_", name)[:64].lstrip("_-") or "other"


@dataclass(frozen=True)
class PartState:
    """What one part of the app is doing, and since when."""

    #: A word for the state: ``started``, ``running``, ``crashed``, ``drift``, ...
    name: str
    #: Whether the part works in this state.
    ok: bool
    #: UNIX time the part entered this state.
    since: float


class Runtime:
    """The readiness of one app, as named checks, and the switch that ends the process on a fatal fault.

    A part reports through :meth:`report` (``runtime.report("disk", "the disk
    is full")``, then ``runtime.report("disk", None)`` once it is fixed), and
    :meth:`declare` makes a check appear in ``/health`` before its first
    problem. ``problems`` is the store behind it: a key ``"<check>"`` or
    ``"<check>:<detail>"`` and its reason; writing it directly still works.

    ``serve`` sets :attr:`on_fatal` to stop the server, so that Swarm's
    restart policy brings a fresh process; under the test fixtures a fatal
    fault only makes ``/ready`` and ``/health`` answer 503.
    """

    def __init__(self, challenge: str) -> None:
        self.challenge = challenge
        self.started = False
        #: Reasons the app is not ready, by ``"<check>"`` or ``"<check>:<detail>"``.
        self.problems: dict[str, str] = {}
        #: Set once a fault means the process must not go on serving.
        self.fatal: str | None = None
        self.on_fatal: Callable[[], None] | None = None
        self._required: dict[str, bool] = dict.fromkeys(BUILTIN_CHECKS, True)
        self._writes_unaffected: set[str] = set()
        #: Checks re-run on every probe of ``/health`` and ``/ready``, by problem key: each returns a
        #: reason, or ``None`` when fine.
        self.probes: dict[str, Callable[[], str | None]] = {}
        #: What a part publishes beside its check's state (the pusher's epoch, revision, snapshot), by check.
        self.details: dict[str, dict[str, object]] = {}
        #: Each part's state (``challenge``, ``database``, ``schema``, ``weights``, ``worker:<name>``, ...).
        self.states: dict[str, PartState] = {}

    def probe(self) -> None:
        """Run every probe, recording or clearing the problem under its key."""
        for key, check in self.probes.items():
            reason = check()
            if reason is None:
                self.problems.pop(key, None)
            else:
                self.problems[key] = reason

    def publish(self, name: str, state: dict[str, object]) -> None:
        """The state of an optional part: ``state["status"]`` ``ok`` or not (then ``state["error"]`` says why).

        It degrades the runner but never makes it unready; the rest of
        ``state`` is shown as the check's details by ``/internal/status``.
        """
        self.declare(name, required=False)
        self.details[name] = {k: v for k, v in state.items() if k != "status"}
        ok = state.get("status") == "ok"
        self.report(name, None if ok else str(state.get("error") or f"{name} is {state.get('status')}"))

    def mark(self, part: str, state: str, ok: bool) -> None:
        """Record that ``part`` is in ``state``; its time changes only when the state does."""
        current = self.states.get(part)
        if current is None or current.name != state or current.ok != ok:
            self.states[part] = PartState(state, ok, time.time())

    def declare(self, name: str, *, required: bool = True, guards_writes: bool = True) -> None:
        """List check ``name`` in ``/health`` from now on; an optional one only degrades the runner.

        A required check makes the runner not ready while it fails, and so
        refuses writes (503 ``runtime_not_ready``), unless ``guards_writes`` is
        false: a fault no write can make worse, such as the master's token
        missing, keeps the runner out of the master's traffic but lets miners write.

        :raises ValueError: when ``name`` is not a lowercase identifier of at most 64 characters.
        """
        if not _NAME.fullmatch(name):
            raise ValueError(f"check name {name[:80]!r} is not a lowercase identifier ([a-z0-9][a-z0-9_-]*)")
        self._required[name] = required
        if guards_writes:
            self._writes_unaffected.discard(name)
        else:
            self._writes_unaffected.add(name)

    def report(self, name: str, problem: str | None, *, key: str | None = None) -> None:
        """Set the state of check ``name``: ``problem`` says why it fails, ``None`` clears it.

        A part with several independent problems names each with ``key``;
        ``report(name, None)`` without a key clears them all. Each change is
        logged once: the reason when a check starts failing, a line when it is
        ok again.
        """
        if name not in self._required:
            self.declare(name)
        slot = name if key is None else f"{name}:{key}"
        if problem is not None:
            if self.problems.get(slot) != problem:
                log.warning("challenge %s: check %s fails: %s", self.challenge, name, problem)
            self.problems[slot] = problem
            return
        gone = [k for k in self.problems if k == slot or (key is None and k.startswith(name + ":"))]
        for k in gone:
            del self.problems[k]
        if gone and not self.failing(name):
            log.info("challenge %s: check %s is ok again", self.challenge, name)

    def failing(self, name: str) -> list[str]:
        """Why check ``name`` fails; empty when it is ok."""
        reasons = [] if name != "lifespan" or self.started else ["startup has not finished"]
        return reasons + [reason for key, reason in self.problems.items() if _check_name(key) == name]

    def checks(self) -> list[HealthCheck]:
        """Every check, built in and reported, with its state, as ``HealthResponse`` lists them."""
        names = dict(self._required)
        for key in self.problems:
            names.setdefault(_check_name(key), True)
        return [health_check(name, not self.failing(name), required=required) for name, required in names.items()]

    @property
    def ready(self) -> bool:
        """Every required check is ok (as of the last report: the database is probed by ``/ready``)."""
        return all(c["status"] == "ok" for c in self.checks() if c["required"])

    def write_blockers(self) -> list[str]:
        """The failing required checks that refuse writes; empty when a write may land."""
        return [
            c["name"]
            for c in self.checks()
            if c["required"] and c["status"] != "ok" and c["name"] not in self._writes_unaffected
        ]

    def fail(self, reason: str, *, check: str = "workers") -> None:
        """Record a fault the process cannot recover from, under ``check``, and stop it."""
        log.error("challenge %s: %s; stopping so the process is restarted", self.challenge, reason)
        self.fatal = reason
        self.problems[f"{check}:fatal"] = reason
        if self.on_fatal is not None:
            self.on_fatal()
