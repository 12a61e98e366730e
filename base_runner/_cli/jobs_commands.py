"""``base-runner jobs``: list, show, retry and cancel a running instance's jobs, through its HTTP API.

Through the server, not the file: the server's one writer connection stays the
only writer of the database (a second process writing beside it is what the
single-writer rule of :mod:`base_runner._storage.db` rules out, and SQLite
builds before 3.51.3 can corrupt a WAL file that way), and only the process
running a job can cancel its attempt at once. So these commands need the
instance running and its master token, as ``base-runner status`` does; with
the instance down, nothing is lost: its jobs wait in the database.

Added to the main command group by :mod:`base_runner._cli.cli`.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

import click

from .._core.errors import ConfigError
from .options import reports_errors

#: Exit codes: the job or the instance refused (404 no such job, 409 not in a state for it), no answer.
REFUSED, UNREACHABLE = 1, 3
PREFIX = "/internal/v1/jobs"

url_option = click.option("--url", help="The instance; default: http://127.0.0.1:CHALLENGE_PORT.")
timeout_option = click.option(
    "--timeout", type=float, default=15.0, show_default=True, help="Seconds to wait for the answer."
)


class _Instance:
    """The running instance: its URL, the master's token, and its slug (read from ``/version``)."""

    def __init__(self, url: str | None, timeout: float) -> None:
        from .._core.auth import MasterAuth
        from .._core.settings import load_settings

        settings = load_settings()
        auth = MasterAuth.of(settings)
        try:
            token = auth.expected_token()
        except Exception:
            raise ConfigError(
                "jobs commands need the master's token, as serve has it: set CHALLENGE_SHARED_TOKEN or "
                "CHALLENGE_SHARED_TOKEN_FILE"
            ) from None
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        self.url = (url or f"http://{host}:{settings.port}").rstrip("/")
        self.timeout = timeout
        version = self._call("GET", "/version", {})
        self.headers = {"Authorization": f"Bearer {token}", "X-Base-Challenge-Slug": str(version["challenge_slug"])}

    def _call(self, method: str, path: str, headers: dict[str, str]) -> dict[str, Any]:
        from .status import Unreachable, request

        try:
            code, body = request(self.url + path, self.timeout, headers, method)
        except Unreachable as exc:
            click.echo(f"base-runner: {exc}; is the instance running? (its jobs wait in its database)", err=True)
            sys.exit(UNREACHABLE)
        try:
            answer = json.loads(body)
        except ValueError:
            answer = {"detail": body.decode(errors="replace")[:200]}
        if code in (401, 403):
            raise ConfigError(f"{self.url}{path} refused the token ({code}): is it this instance's master token?")
        if code >= 400:
            click.echo(f"base-runner: error: {answer.get('detail', code)}", err=True)
            sys.exit(REFUSED)
        return dict(answer)

    def call(self, method: str, path: str) -> dict[str, Any]:
        return self._call(method, PREFIX + path, self.headers)


def _when(moment: float | None, now: float) -> str:
    if moment is None:
        return "-"
    iso = datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    elapsed = now - moment
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(elapsed) >= size:
            return f"{iso} ({elapsed / size:.0f}{unit} {'ago' if elapsed >= 0 else 'from now'})"
    return f"{iso} ({abs(elapsed):.0f}s {'ago' if elapsed >= 0 else 'from now'})"


@click.group()
def jobs() -> None:
    """A running instance's evaluation jobs: list, show, retry a dead one, cancel one (its master token)."""


@jobs.command(name="list")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(["queued", "running", "succeeded", "dead", "cancelled"]),
    help="Only jobs in this state (repeat for several).",
)
@click.option("--task", help="Only jobs of this task.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="Jobs to list.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@url_option
@timeout_option
@reports_errors
def list_(
    states: tuple[str, ...], task: str | None, limit: int, as_json: bool, url: str | None, timeout: float
) -> None:
    """The newest jobs first: id, task, state, attempts, when it was enqueued, and its last error."""
    from urllib.parse import urlencode

    query = urlencode([("state", s) for s in states] + ([("task", task)] if task else []) + [("limit", limit)])
    found = _Instance(url, timeout).call("GET", f"?{query}")["jobs"]
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    if not found:
        click.echo("no job" + (f" is {' or '.join(states)}" if states else ""))
        return
    now = time.time()
    rows = [
        (job["id"], job["task"], job["state"], str(job["attempts"]), _when(job["enqueued_at"], now), job["error"] or "")
        for job in found
    ]
    table = [("ID", "TASK", "STATE", "ATTEMPTS", "ENQUEUED", "LAST ERROR"), *rows]
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for row in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row[:5], widths, strict=True)) + "  " + row[5])


def _render(job: dict[str, Any]) -> str:
    now = time.time()
    lines = [f"job {job['id']}: {job['task']}, {job['state']}"]
    shown = {
        "arguments": json.dumps(job["args"]),
        "key": job["key"] or "-",
        "priority": str(job["priority"]),
        "attempts": str(job["attempts"]),
        "enqueued": _when(job["enqueued_at"], now),
        "due": _when(job["run_at"], now) if job["state"] == "queued" else "-",
        "started": _when(job["started_at"], now),
        "finished": _when(job["finished_at"], now),
        "progress": "-" if job["progress"] is None else f"{job['progress']:.0%} {job['message'] or ''}".rstrip(),
        "request": job["correlation_id"] or "-",
        "last error": job["error"] or "-",
    }
    lines += [f"  {name}: {value}" for name, value in shown.items()]
    if job.get("traceback"):
        lines += ["  traceback:", *("    " + line for line in job["traceback"].rstrip().splitlines())]
    return "\n".join(lines)


def _one(action: str, method: str, job_id: str, as_json: bool, url: str | None, timeout: float) -> None:
    job = _Instance(url, timeout).call(method, f"/{job_id}{action}")
    click.echo(json.dumps(job, indent=2) if as_json else _render(job))


@jobs.command()
@click.argument("job_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@url_option
@timeout_option
@reports_errors
def show(job_id: str, as_json: bool, url: str | None, timeout: float) -> None:
    """Everything about one job: its arguments, attempts, progress, and its last error with the traceback."""
    _one("", "GET", job_id, as_json, url, timeout)


@jobs.command()
@click.argument("job_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@url_option
@timeout_option
@reports_errors
def retry(job_id: str, as_json: bool, url: str | None, timeout: float) -> None:
    """Queue a dead or cancelled job again, with all its attempts; exit 1 if it is in another state."""
    _one("/retry", "POST", job_id, as_json, url, timeout)


@jobs.command()
@click.argument("job_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@url_option
@timeout_option
@reports_errors
def cancel(job_id: str, as_json: bool, url: str | None, timeout: float) -> None:
    """Cancel a queued job (it never runs) or a running one (its task sees CancelledError); exit 1 if finished."""
    _one("/cancel", "POST", job_id, as_json, url, timeout)
