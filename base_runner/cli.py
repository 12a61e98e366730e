"""The ``base-runner`` command: serve a challenge, list challenges, compute weights once.

Data flows one way: options and environment → settings → selected plugin → app.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__
from .app import bind
from .db import database
from .errors import RunnerError
from .plugins import LoadedChallenge, describe_all, load, select
from .settings import RunnerSettings, database_url, load_settings, prepare_data_dir, scrub_environment

log = logging.getLogger("base_runner")

F = TypeVar("F", bound=Callable[..., Any])

challenge_option = click.option(
    "--challenge", metavar="NAME", help="Challenge to run; default: BASE_CHALLENGE_SLUG, else the only one installed."
)
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="Folder for the SQLite file and artifacts; default: CHALLENGE_DATA_DIR, else /data.",
)
debug_option = click.option("--debug", is_flag=True, help="Log at debug level and show tracebacks.")


def _logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def reports_errors(command: F) -> F:
    """Turn a :class:`RunnerError` into one line on stderr and its exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except RunnerError as exc:
            if kwargs.get("debug"):
                traceback.print_exc()
            click.echo(f"base-runner: error: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


def start(challenge: str | None, **options: Any) -> tuple[RunnerSettings, LoadedChallenge]:
    """Settings, a scrubbed environment, the database configured, the challenge loaded."""
    settings = load_settings(**options)
    scrub_environment()
    settings.data_dir = prepare_data_dir(settings.data_dir)
    database_url(settings)  # refuse a bad URL before any challenge code runs
    bind(settings)
    return settings, load(select(challenge))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="base-runner")
def main() -> None:
    """Run a BASE challenge that is installed as a plugin package."""


@main.command()
@challenge_option
@click.option("--host", help="Address to bind; default: CHALLENGE_HOST, else 127.0.0.1.")
@click.option("--port", type=int, help="Port to bind; default: CHALLENGE_PORT, else 8000.")
@data_dir_option
@debug_option
@reports_errors
def serve(challenge: str | None, host: str | None, port: int | None, data_dir: Path | None, debug: bool) -> None:
    """Serve the challenge until SIGTERM or Ctrl-C."""
    import uvicorn

    from .app import create_app, serving

    _logging(debug)
    settings, loaded = start(challenge, host=host, port=port, data_dir=data_dir)
    app = create_app(loaded, settings)
    server = uvicorn.Server(
        uvicorn.Config(
            serving(app),
            host=settings.host,
            port=settings.port,
            lifespan="on",
            log_level="debug" if debug else "info",
            access_log=settings.access_log or debug,
            # Under Swarm's default 10 s stop grace period, leaving time to checkpoint the WAL.
            timeout_graceful_shutdown=8,
        )
    )
    runtime = app.state.runtime
    runtime.on_fatal = lambda: setattr(server, "should_exit", True)
    # uvicorn re-raises SIGTERM/SIGINT to the previous handler once it has shut
    # down gracefully; without one here the process would die of the signal
    # (exit 143) instead of reporting a clean stop.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, lambda *_: None)
    server.run()
    if not server.started:
        sys.exit(3)
    if runtime.fatal is not None:
        click.echo(f"base-runner: error: challenge {loaded.name}: {runtime.fatal}", err=True)
        sys.exit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--probe", metavar="NAME", hidden=True, help="Load NAME in this process and print its hooks.")
@reports_errors
def plugins(as_json: bool, probe: str | None) -> None:
    """List installed challenges, each with whether it loads."""
    if probe is not None:
        scrub_environment()
        click.echo(" ".join(load(select(probe)).hooks))
        return
    rows = describe_all()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no challenge is installed")
        return
    for row in rows:
        state = "loads (" + ", ".join(row["hooks"]) + ")" if row["loads"] else f"BROKEN: {row['error']}"
        click.echo(f"{row['name']}  {row['distribution']} {row['version']}  {row['module']}  {state}")


@main.command()
@challenge_option
@data_dir_option
@debug_option
@reports_errors
def weights(challenge: str | None, data_dir: Path | None, debug: bool) -> None:
    """Compute the weights once and print the JSON body the master would get."""
    from .weights import WeightsError, compute, serialize

    _logging(debug)
    settings, loaded = start(challenge, data_dir=data_dir)

    async def once() -> tuple[bytes, int]:
        try:
            await database.create_all()
            validated = await compute(loaded, settings.weights_timeout)
        finally:
            await database.close()
        return serialize(loaded.name, validated), len(validated.dropped)

    try:
        body, dropped = asyncio.run(once())
    except WeightsError as exc:
        click.echo(f"base-runner: error: {exc}", err=True)
        sys.exit(1)
    click.echo(body.decode())
    if dropped:
        click.echo(f"base-runner: dropped {dropped} invalid entries (see the warnings above)", err=True)


@main.command()
@click.argument("slug")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder to create, absent or empty; default: ./SLUG.",
)
@reports_errors
def new(slug: str, directory: Path | None) -> None:
    """Create a challenge package: plugin, tests, Dockerfile and CI that publishes its image."""
    from .scaffold import create

    names, target, _files = create(slug, directory)
    click.echo(f"created {names.distribution} in {target}: challenge {names.slug}, package {names.module}")
    click.echo(f"next: cd {target} && pip install -e '.[dev]' && pytest && base-runner check --challenge {slug}")


@main.command()
@challenge_option
@debug_option
@reports_errors
def check(challenge: str | None, debug: bool) -> None:
    """Check the challenge against the BASE contract on a temporary data dir; exit 1 if a check fails."""
    from . import check as contract

    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    selected = select(challenge)
    failures = asyncio.run(contract.run(selected, lambda outcome: click.echo(outcome.line())))
    if failures:
        click.echo(f"{selected.name}: {failures} check(s) failed; fix them before publishing", err=True)
        sys.exit(1)
    click.echo(f"{selected.name}: every check passed")


def _register() -> None:
    # Imported here: the subcommand modules build on the options and helpers above.
    from .db_commands import db

    main.add_command(db)


_register()
