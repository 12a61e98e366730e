"""What the running process knows about itself: started, not ready and why, or dead."""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("base_runner")


class Runtime:
    """Readiness of one app, and the switch that ends the process on a fatal fault.

    ``serve`` sets :attr:`on_fatal` to stop the server, so that Swarm's
    restart policy brings a fresh process; under the test fixtures a fatal
    fault only makes ``/ready`` and ``/health`` answer 503.
    """

    def __init__(self, challenge: str) -> None:
        self.challenge = challenge
        self.started = False
        #: Reasons the app is not ready, by the part that reported them.
        self.problems: dict[str, str] = {}
        #: Set once a fault means the process must not go on serving.
        self.fatal: str | None = None
        self.on_fatal: Callable[[], None] | None = None
        #: Checks re-run on every ``/ready``, by problem key: each returns a reason, or ``None`` when fine.
        self.probes: dict[str, Callable[[], str | None]] = {}
        #: The state of each part that never decides readiness (the pusher), by name; each has a ``status``.
        self.checks: dict[str, dict[str, object]] = {}

    def probe(self) -> None:
        """Run every probe, recording or clearing the problem under its key."""
        for key, check in self.probes.items():
            reason = check()
            if reason is None:
                self.problems.pop(key, None)
            else:
                self.problems[key] = reason

    def report(self, name: str, state: dict[str, object]) -> None:
        """Record the state of the optional part ``name``: ``status`` ``ok`` or ``degraded``, and its details."""
        self.checks[name] = {**state, "required": False}

    def reasons(self) -> list[str]:
        """Why the app is not ready; empty when it is."""
        reasons = [] if self.started else ["startup has not finished"]
        return reasons + list(self.problems.values())

    def fail(self, reason: str) -> None:
        """Record a fault the process cannot recover from, and stop it."""
        log.error("challenge %s: %s; stopping so the process is restarted", self.challenge, reason)
        self.fatal = reason
        self.problems["fatal"] = reason
        if self.on_fatal is not None:
            self.on_fatal()
