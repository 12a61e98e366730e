"""What every ``base-runner`` command shares: its options, its error reporting, its start.

The command modules (:mod:`base_runner._cli.cli`, :mod:`base_runner._cli.db_commands`) import
from here, never from each other. Only click is imported at module level: ``--help``,
``--version`` and ``plugins`` must not pay for FastAPI, SQLAlchemy or pydantic, so
:func:`start` imports them when a command calls it.
"""

from __future__ import annotations

import functools
import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .._core.errors import RunnerError

if TYPE_CHECKING:
    from .._core.settings import RunnerSettings
    from .._plugins.plugins import LoadedChallenge
    from .._weights.weights import Validated

F = TypeVar("F", bound=Callable[..., Any])

#: ``--challenge NAME``: which installed challenge a command acts on.
challenge_option = click.option(
    "--challenge", metavar="NAME", help="Challenge to run; default: BASE_CHALLENGE_SLUG, else the only one installed."
)
#: ``--data-dir PATH``: the folder of the SQLite file and artifacts.
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="Folder for the SQLite file and artifacts; default: CHALLENGE_DATA_DIR, else /data.",
)
#: ``--debug``: debug logging and tracebacks.
debug_option = click.option("--debug", is_flag=True, help="Log at debug level and show tracebacks.")


#: ``--log-format``: text, JSON lines, or by whether stderr is a terminal.
log_format_option = click.option(
    "--log-format",
    type=click.Choice(["auto", "text", "json"]),
    help="Log lines as text or JSON; default: CHALLENGE_LOG_FORMAT, else auto (JSON unless stderr is a terminal).",
)


def configure_logging(debug: bool, log_format: str = "auto") -> None:
    """The one logging setup (:mod:`base_runner._core.logs`), at debug level with ``--debug``, else at info."""
    from .._core import logs

    logs.setup(log_format, logging.DEBUG if debug else logging.INFO)
    quiet_drivers()


def quiet_drivers() -> None:
    """Keep the database driver's debug lines (two per statement) out of ``--debug``'s output."""
    logging.getLogger("aiosqlite").setLevel(logging.INFO)


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


def start(
    challenge: str | None, log_level: int = logging.INFO, **options: Any
) -> tuple[RunnerSettings, LoadedChallenge]:
    """Settings, logging set up, a scrubbed environment, the database configured, the challenge loaded.

    :param log_level: the lowest level logged (commands whose output is a report log only warnings).
    :param options: settings from the command line; ``None`` leaves the environment's.
    """
    from .._core import logs
    from .._core.settings import database_url, load_settings, prepare_data_dir, scrub_environment
    from .._http.assembly import bind
    from .._observe import tracing
    from .._plugins.plugins import load, select

    settings = load_settings(**options)
    logs.setup(settings.log_format, log_level)
    quiet_drivers()
    tracing.withhold_credentials()
    scrub_environment()
    settings.data_dir = prepare_data_dir(settings.data_dir)
    database_url(settings)  # refuse a bad URL before any challenge code runs
    bind(settings)
    selected = select(challenge)
    logs.set_challenge(selected.name)
    return settings, load(selected)


def weights_once(settings: RunnerSettings, loaded: LoadedChallenge) -> Validated:
    """Run the challenge's ``get_weights`` once, validated, with its tables created; the database closed after.

    Raises :class:`~base_runner._weights.weights.WeightsError` when the challenge fails.
    """
    import asyncio

    from .._storage.db import database
    from .._weights.weights import compute

    async def once() -> Validated:
        try:
            await database.create_all()
            return await compute(loaded, settings.weights_timeout)
        finally:
            await database.close()

    return asyncio.run(once())
