"""``base-runner push``: what the pusher sent to the 3.1 master, and one push by hand.

Added to the main command group by :mod:`base_runner._cli.cli`; each command
imports the pusher and its dependencies inside its function.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .._core.errors import ConfigError
from .options import challenge_option, data_dir_option, debug_option, reports_errors

if TYPE_CHECKING:
    from .._push.attempt import Attempt


@click.group()
def push() -> None:
    """Weights pushed to a 3.1 master (CHALLENGE_MASTER_BASE_URL): status, and one push by hand."""


@push.command()
@challenge_option
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--limit", type=click.IntRange(1, 1000), default=10, show_default=True, help="Requests to list.")
@reports_errors
def status(challenge: str | None, data_dir: Path | None, as_json: bool, limit: int) -> None:
    """The last acknowledged epoch, revision and snapshot, what is pending, and the last requests."""
    import time

    from .._core.settings import load_settings
    from .._plugins.plugins import select
    from .._push.attempt import ledger, shown_url
    from .._push.protocol import epoch_of
    from .._push.store import PushStore, store_path
    from .._storage.dbfile import DatabaseFile

    settings = load_settings(data_dir=data_dir)
    slug = select(challenge).name
    path = store_path(settings.data_dir)
    report: dict[str, object] = {
        "challenge": slug,
        "master": shown_url(settings.master_base_url) if settings.master_base_url else None,
        "epoch_seconds": settings.epoch_seconds,
        "current_epoch": epoch_of(time.time(), settings.epoch_seconds),
        "ledger": str(path),
    }
    if path.parent.exists():
        # What a serving pusher cannot record while it lasts: its volume full or read-only. Checked
        # as the challenge's database is, with the same CHALLENGE_MIN_FREE_MB.
        minimum = DatabaseFile.of(settings).min_free
        report["ledger_problem"] = DatabaseFile(path, settings.data_dir, minimum).space_problem()
    else:
        report["ledger_problem"] = None
    if path.exists():
        store = PushStore(path, slug)
        try:
            report.update(ledger(store))
            report["recent"] = [row.view() for row in store.recent(limit)]
        finally:
            store.close()
    else:
        report.update(epoch=None, revision=None, snapshot_id=None, pending=None, recent=[])
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    _show(report, settings.epoch_seconds, pushing=bool(settings.master_base_url))


def _show(report: dict[str, Any], epoch_seconds: int, pushing: bool) -> None:
    """``push status``'s report as text."""
    click.echo(f"challenge {report['challenge']}: push {'to ' + str(report['master']) if report['master'] else 'off'}")
    if not pushing:
        click.echo("  (set CHALLENGE_MASTER_BASE_URL to push to a 3.1 master)")
    click.echo(f"epoch: {report['current_epoch']} now, {epoch_seconds} s each")
    if report["ledger_problem"]:
        click.echo(f"ledger: {report['ledger_problem']}; new pushes cannot be stored")
    if report["epoch"] is None:
        click.echo("last acknowledged: none")
    else:
        click.echo(
            f"last acknowledged: epoch {report['epoch']} revision {report['revision']} snapshot {report['snapshot_id']}"
        )
    pending = report["pending"]
    if isinstance(pending, dict):
        click.echo(
            f"pending: epoch {pending['epoch']} revision {pending['revision']}, {pending['attempts']} attempts, "
            f"last error: {pending['last_error'] or 'none'}"
        )
    else:
        click.echo("pending: none")
    for row in report["recent"]:
        outcome = row["snapshot_id"] or row["last_error"] or ""
        click.echo(f"  epoch {row['epoch']} revision {row['revision']}: {row['state']} {outcome}".rstrip())


@push.command()
@challenge_option
@data_dir_option
@debug_option
@reports_errors
def once(challenge: str | None, data_dir: Path | None, debug: bool) -> None:
    """Push the current weights now and print the master's acknowledgement.

    A request still pending is sent first, byte for byte; unchanged weights the
    master already acknowledged are sent again, and it answers ``idempotent``.
    """
    import asyncio

    import httpx

    from .._core.auth import MasterAuth
    from .._push.pusher import REQUEST_TIMEOUT, Pusher
    from .._push.running import PushConfig
    from .._push.store import PushStore, store_path
    from .._weights.weights import WeightsError
    from .options import start, weights_once

    settings, loaded = start(challenge, logging.DEBUG if debug else logging.INFO, data_dir=data_dir)
    config = PushConfig.of(settings)
    if config is None:
        raise ConfigError("push once needs the master's URL: set CHALLENGE_MASTER_BASE_URL")
    try:
        validated = weights_once(settings, loaded)
    except WeightsError as exc:
        click.echo(f"base-runner: error: {exc}", err=True)
        sys.exit(1)
    auth = MasterAuth.of(settings, loaded.name)

    async def weights() -> dict[str, float]:
        return validated.weights

    async def push_now() -> Attempt:
        store = PushStore(store_path(config.data_dir), loaded.name)
        try:
            async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as client:
                pusher = Pusher.of(
                    loaded.name, config, weights=weights, token=auth.expected_token, store=store, client=client
                )
                return await pusher.step(force=True)
        finally:
            store.close()

    attempt = asyncio.run(push_now())
    if attempt.ack is not None:
        click.echo(json.dumps(attempt.ack))
        return
    where = attempt.push
    which = f" (epoch {where.epoch} revision {where.revision})" if where is not None else ""
    click.echo(f"base-runner: push{which}: {attempt.outcome}: {attempt.detail}", err=True)
    sys.exit(1)
