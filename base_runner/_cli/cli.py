"""The ``base-runner`` command: serve a challenge, list challenges, compute weights once.

Data flows one way: options and environment → settings → selected plugin → app.

Each command imports what it needs inside its function: this module, and
everything it imports at module level, must stay cheap enough that
``base-runner --help``, ``--version`` and ``plugins`` never load FastAPI,
SQLAlchemy or pydantic (``tests/test_cli.py`` checks). Shared options and
helpers live in :mod:`base_runner._cli.options`; groups of subcommands
(``db``) in modules of their own, added at the end.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from .._core.errors import PluginError
from .._core.text import plural
from .._core.version import __version__
from .db_commands import db
from .jobs_commands import jobs
from .options import (
    challenge_option,
    data_dir_option,
    debug_option,
    log_format_option,
    quiet_drivers,
    reports_errors,
    start,
    weights_once,
)
from .push_commands import push


class _Commands(click.Group):
    """The command group, which ends quietly when its reader goes away (``base-runner check | head``)."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, **kwargs)
        except BrokenPipeError:
            # Python would report the pipe again when it flushes stdout at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="base-runner")
def main() -> None:
    """Run a BASE challenge that is installed as a plugin package."""


@main.command()
@challenge_option
@click.option("--host", help="Address to bind; default: CHALLENGE_HOST, else 127.0.0.1.")
@click.option("--port", type=int, help="Port to bind; default: CHALLENGE_PORT, else 8000.")
@data_dir_option
@click.option("--reload", is_flag=True, help="For development: restart whenever the challenge's code changes.")
@debug_option
@log_format_option
@reports_errors
def serve(
    challenge: str | None,
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    reload: bool,
    debug: bool,
    log_format: str | None,
) -> None:
    """Serve the challenge until SIGTERM or Ctrl-C."""
    if reload:
        from . import reloading

        reloading.serve(challenge, host, port, data_dir, debug, log_format)
        return
    import gc

    # Startup builds a few hundred thousand objects that live as long as the
    # process (FastAPI, SQLAlchemy, the challenge's models and routes) and
    # almost no garbage: the cyclic collector's passes over them are a sixth
    # of the start (docs/performance.md). Collect nothing until the app is
    # built, then freeze what startup made so that no later pass walks it.
    gc.disable()
    from .._http.assembly import build_runner
    from .._http.server import NeverStarted, run

    level = logging.DEBUG if debug else logging.INFO
    settings, loaded = start(challenge, level, host=host, port=port, data_dir=data_dir, log_format=log_format)
    runner = build_runner(loaded, settings, serve=True)
    gc.freeze()
    gc.enable()
    try:
        fatal = run(runner, level)
    except NeverStarted:
        sys.exit(3)
    if fatal is not None:
        click.echo(f"base-runner: error: challenge {loaded.name}: {fatal}", err=True)
        sys.exit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--probe", metavar="NAME", hidden=True, help="Load NAME in this process and print its hooks.")
@reports_errors
def plugins(as_json: bool, probe: str | None) -> None:
    """List installed challenges, each with whether it loads; exit 3 when one does not."""
    import json

    from .._plugins.plugins import describe_all, load, select

    if probe is not None:
        from .._core.settings import scrub_environment

        scrub_environment()
        click.echo(" ".join(load(select(probe)).hooks))
        return
    rows = describe_all()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo("no challenge is installed")
    else:
        for row in rows:
            state = "loads (" + ", ".join(row["hooks"]) + ")" if row["loads"] else f"BROKEN: {row['error']}"
            click.echo(f"{row['name']}  {row['distribution']} {row['version']}  {row['module']}  {state}")
    if any(not row["loads"] for row in rows):
        sys.exit(PluginError.exit_code)


@main.command()
@challenge_option
@data_dir_option
@click.option(
    "--allow-dropped", is_flag=True, help="Exit 0 even when invalid entries were dropped (they are still reported)."
)
@debug_option
@log_format_option
@reports_errors
def weights(
    challenge: str | None, data_dir: Path | None, allow_dropped: bool, debug: bool, log_format: str | None
) -> None:
    """Compute the weights once and print the JSON body the master would get; exit 1 if entries were dropped."""
    from .._storage.dbfile import DatabaseFile
    from .._weights.weights import WeightsError, serialize

    level = logging.DEBUG if debug else logging.INFO
    settings, loaded = start(challenge, level, data_dir=data_dir, log_format=log_format)
    DatabaseFile.of(settings).check_before_open()  # never create an empty database where one was lost
    try:
        validated = weights_once(settings, loaded)
    except WeightsError as exc:
        click.echo(f"base-runner: error: {exc}", err=True)
        sys.exit(1)
    click.echo(serialize(loaded.name, validated).decode())
    if validated.dropped:
        count = len(validated.dropped)
        click.echo(
            f"base-runner: dropped {plural(count, 'invalid entry', 'invalid entries')} (see the warnings above); "
            "the master gets the rest (--allow-dropped exits 0 all the same)",
            err=True,
        )
        if not allow_dropped:
            sys.exit(1)


@main.command()
@click.argument("slug")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder to create, absent or empty; default: ./SLUG.",
)
@click.option(
    "--runner-image",
    metavar="IMAGE",
    help="The runner image to build on, without a tag (a fork's); default: the published one.",
)
@click.option(
    "--runner-version",
    metavar="VERSION",
    help="The base-runner release to require and build on; default: this one (a checkout's, with a PATH).",
)
@click.option(
    "--runner-from",
    metavar="pypi|git|PATH",
    help="Where the generated CI and README install base-runner from: PyPI, the release's git tag "
    "(default, works before the release is on PyPI), or a local checkout's folder.",
)
@reports_errors
def new(
    slug: str, directory: Path | None, runner_image: str | None, runner_version: str | None, runner_from: str | None
) -> None:
    """Create a challenge package: plugin, tests, Dockerfile and CI that publishes its image."""
    from .._authoring.scaffold import Runner, create

    runner = Runner.of(runner_version, runner_image, runner_from)
    names, target, _files = create(slug, directory, runner)
    requirement = runner.requirement(target)
    click.echo(f"created {names.distribution} in {target}: challenge {names.slug}, package {names.module}")
    click.echo(
        f"next: cd {target} && pip install '{requirement}' && pip install -e '.[dev]' && pytest "
        f"&& base-runner check --challenge {slug}"
    )
    if isinstance(runner.source, Path) and not runner.source.is_relative_to(target.resolve()):
        click.echo(
            f"note: .github/workflows/ci.yml installs base-runner from {requirement.removesuffix('[testing]')}, "
            "outside the package, which GitHub's CI will not have: use a checkout inside it (a git submodule) "
            "or --runner-from git"
        )


@main.command()
@challenge_option
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Run the checks on a copy of this data dir (real data); it is never written. Default: an empty one.",
)
@debug_option
@reports_errors
def check(challenge: str | None, data_dir: Path | None, debug: bool) -> None:
    """Check the challenge against the BASE contract on a temporary data dir; exit 1 if a check fails."""
    import asyncio

    from .._authoring import check as contract
    from .._plugins.plugins import select

    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    quiet_drivers()
    selected = select(challenge)
    failures = asyncio.run(contract.run(selected, lambda outcome: click.echo(outcome.line()), data_dir))
    if failures:
        click.echo(f"{selected.name}: {plural(failures, 'check')} failed; fix them before publishing", err=True)
        sys.exit(1)
    click.echo(f"{selected.name}: every check passed")


@main.command()
@click.option("--url", help="The instance; default: http://127.0.0.1:CHALLENGE_PORT.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait for each answer.")
@reports_errors
def status(url: str | None, as_json: bool, timeout: float) -> None:
    """Show a running instance's parts, their states and since when; exit 0 ready, 1 degraded, 3 no answer."""
    import json

    from .._core.auth import MasterAuth
    from .._core.settings import load_settings
    from . import status as report

    settings = load_settings()
    auth = MasterAuth.of(settings)
    try:
        token = auth.expected_token()
    except Exception:  # no token configured, or unreadable: status says so itself
        token = None
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    try:
        found = report.read(url or f"http://{host}:{settings.port}", token, timeout)
    except report.Unreachable as exc:
        click.echo(f"base-runner: {exc}", err=True)
        sys.exit(report.UNREACHABLE)
    click.echo(json.dumps(found.as_json(), indent=2) if as_json else report.render(found))
    sys.exit(found.exit_code)


main.add_command(db)
main.add_command(jobs)
main.add_command(push)
