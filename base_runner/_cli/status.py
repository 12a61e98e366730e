"""``base-runner status``: what a running instance says of itself, from ``/ready`` and its metrics.

It reads only what the HTTP surface exposes, so it works against a
container from the node as well as inside it. Exit codes, for scripts:
:data:`OK` every part works and the instance is ready, :data:`DEGRADED`
it answers but is not ready or a part is down, :data:`UNREACHABLE` no
answer at all; a refused token or none configured is a configuration
fault (2, :class:`~base_runner.ConfigError`).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .._core.errors import ConfigError

OK, DEGRADED, UNREACHABLE = 0, 1, 3
METRICS_PATH = "/internal/v1/metrics"
STATUS_PATH = "/internal/status"


class Unreachable(Exception):
    """The instance did not answer; ``str()`` says how."""


@dataclass
class Status:
    """One look at a running instance."""

    url: str
    #: ``/ready``'s status code, and ``/internal/status``'s body (each check with its reasons).
    ready_status: int
    readiness: dict[str, Any]
    #: ``part -> {"state", "ok", "since"}``, from ``base_runner_part_*``.
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The last weights computation and the cache.
    weights: dict[str, Any] = field(default_factory=dict)
    #: The challenge, versions and process start, from ``base_runner_info`` and ``process_start_time_seconds``.
    process: dict[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.ready_status == 200

    @property
    def exit_code(self) -> int:
        healthy = self.ready and all(part["ok"] for part in self.parts.values())
        return OK if healthy else DEGRADED

    def as_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "ready": self.ready,
            "readiness": self.readiness,
            "parts": self.parts,
            "weights": self.weights,
            "process": self.process,
        }


def request(url: str, timeout: float, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, bytes]:
    """``method`` on ``url``: the status and body, of an error answer too; :class:`Unreachable` when none."""
    asked = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(asked, timeout=timeout) as response:  # noqa: S310 - the operator's URL
            return response.status, response.read()
    except urllib.error.HTTPError as answer:
        return answer.code, answer.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"no answer from {url}: {reason}") from None


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def read(url: str, token: str | None, timeout: float = 5.0) -> Status:
    """Ask the instance at ``url``; ``token`` is the master's, which the metrics need.

    Raises :class:`Unreachable` when it does not answer, and
    :class:`~base_runner.ConfigError` when the metrics refuse the token.
    """
    base = url.rstrip("/")
    ready_status, _ = request(base + "/ready", timeout)
    # The same checks as /ready, with their reasons.
    code, body = request(base + STATUS_PATH, timeout)
    try:
        readiness = json.loads(body)
    except ValueError:
        raise Unreachable(f"{base}{STATUS_PATH} answered {code} with a body that is not JSON") from None
    status = Status(url=base, ready_status=ready_status, readiness=readiness)
    if token is None:
        raise ConfigError(
            "status needs the master's token to read the metrics: set CHALLENGE_SHARED_TOKEN or "
            "CHALLENGE_SHARED_TOKEN_FILE as for serve"
        )
    code, text = request(base + METRICS_PATH, timeout, {"Authorization": f"Bearer {token}"})
    if code in (401, 403):
        raise ConfigError(f"{base}{METRICS_PATH} refused the token ({code}): is it this instance's master token?")
    if code != 200:
        raise Unreachable(f"{base}{METRICS_PATH} answered {code}")
    _fill(status, _samples(text.decode()))
    return status


def _fill(status: Status, samples: list[tuple[str, dict[str, str], float]]) -> None:
    since: dict[str, float] = {}
    seconds: dict[str, float] = {}
    counts: dict[str, float] = {}
    for name, labels, value in samples:
        if name == "base_runner_part_up":
            status.parts[labels["part"]] = {"state": labels["state"], "ok": value == 1.0, "since": None}
        elif name == "base_runner_part_since_timestamp_seconds":
            since[labels["part"]] = value
        elif name == "base_runner_get_weights_last_timestamp_seconds":
            status.weights.setdefault("last", {})[labels["outcome"]] = _iso(value)
        elif name == "base_runner_get_weights_duration_seconds_sum":
            seconds[labels["outcome"]] = value
        elif name == "base_runner_get_weights_duration_seconds_count":
            counts[labels["outcome"]] = value
        elif name == "base_runner_weights_cache_age_seconds":
            status.weights["cache_age_seconds"] = None if value < 0 else round(value, 3)
        elif name == "base_runner_weights_cache_hits_total":
            status.weights["cache_hits"] = int(value)
        elif name == "base_runner_weights_cache_misses_total":
            status.weights["cache_misses"] = int(value)
        elif name == "base_runner_info":
            status.process.update(labels)
        elif name == "process_start_time_seconds":
            status.process["started"] = _iso(value)
    for part, moment in since.items():
        if part in status.parts:
            status.parts[part]["since"] = _iso(moment)
    status.weights["calls"] = {outcome: int(count) for outcome, count in counts.items() if count}
    status.weights["mean_seconds"] = {
        outcome: round(seconds[outcome] / count, 4) for outcome, count in counts.items() if count
    }


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _ago(iso: str | None, now: float) -> str:
    if iso is None:
        return ""
    elapsed = max(0, now - datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if elapsed >= size:
            return f"{iso} ({elapsed / size:.0f}{unit} ago)"
    return f"{iso} ({elapsed:.0f}s ago)"


def render(status: Status, now: float | None = None) -> str:
    """The status as lines for a person."""
    now = time.time() if now is None else now
    process = status.process
    who = f"{process.get('challenge', '?')} {process.get('challenge_version', '?')}"
    lines = [
        f"{who} on base-runner {process.get('runner_version', '?')} at {status.url}: "
        f"{'ready' if status.ready else 'NOT READY'}, up since {_ago(process.get('started'), now)}"
    ]
    for name, check in sorted(status.readiness.get("checks", {}).items()):
        if check.get("status") != "ok":
            reasons = "; ".join(check.get("reasons") or []) or check.get("status", "?")
            lines.append(f"  check {name} fails: {reasons}")
    width = max([len(part) for part in status.parts] + [4])
    for part, state in sorted(status.parts.items()):
        mark = "ok  " if state["ok"] else "DOWN"
        lines.append(f"{mark} {part:<{width}}  {state['state']:<14} since {_ago(state['since'], now)}")
    jobs = status.readiness.get("checks", {}).get("jobs", {})
    if jobs.get("queue"):
        oldest = jobs.get("oldest_due_seconds", {})
        shown = [
            f"{task} "
            + ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
            + (f" (oldest due {oldest[task]:.1f}s ago)" if oldest.get(task) else "")
            for task, states in sorted(jobs["queue"].items())
        ]
        lines.append("jobs: " + "; ".join(shown))
    elif "queue" in jobs:
        lines.append("jobs: none queued, running or dead")
    weights = status.weights
    last = weights.get("last", {})
    if last:
        outcome, moment = max(last.items(), key=lambda item: item[1])
        mean = weights.get("mean_seconds", {}).get(outcome)
        took = f", {mean * 1000:.1f} ms on average" if mean is not None else ""
        lines.append(f"last weights computation: {outcome} at {_ago(moment, now)}{took}")
    else:
        lines.append("last weights computation: none yet")
    age = weights.get("cache_age_seconds")
    lines.append(
        f"weights cache: {'empty' if age is None else f'{age:.1f}s old'}, "
        f"{weights.get('cache_hits', 0)} hits, {weights.get('cache_misses', 0)} misses"
    )
    return "\n".join(lines)
