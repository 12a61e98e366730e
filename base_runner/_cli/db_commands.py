"""``base-runner db``: create the tables, report schema drift, apply its fix, inspect the file read-only.

Added to the main command group by :mod:`base_runner._cli.cli`. Like every command,
each one imports SQLAlchemy and the app's modules inside its function.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import click

from .._core.errors import ConfigError
from .._core.text import plural
from .options import challenge_option, data_dir_option, debug_option, reports_errors, start


def _file(url: str) -> Path:
    from sqlalchemy.engine import make_url

    return Path(make_url(url).database or "")


def _run(coro_factory: Any) -> Any:
    import asyncio

    from .._storage.db import database

    async def run() -> Any:
        try:
            return await coro_factory()
        finally:
            await database.close()

    return asyncio.run(run())


@click.group()
def db() -> None:
    """The challenge's SQLite database: create, check, inspect."""


@db.command()
@challenge_option
@data_dir_option
@debug_option
@reports_errors
def init(challenge: str | None, data_dir: Path | None, debug: bool) -> None:
    """Create the database and the challenge's missing tables, and print what was created.

    Also the way to start a new, empty database on a data dir whose database is gone.
    """
    from .._core.settings import database_url
    from .._storage.datadir import DataDirLock
    from .._storage.db import database
    from .._storage.dbfile import DatabaseFile

    settings, loaded = start(challenge, logging.WARNING, data_dir=data_dir)
    DataDirLock(settings.data_dir).acquire(settings.lock_wait)
    dbfile = DatabaseFile.of(settings)
    dbfile.check_before_open(create=True)
    created = _run(database.create_all)
    dbfile.opened()
    dbfile.stopped()
    if created:
        click.echo(f"created {plural(len(created), 'table')}: {', '.join(created)}")
    else:
        click.echo(f"nothing to create: every table of {loaded.name} exists in {_file(database_url(settings))}")


@db.command()
@challenge_option
@data_dir_option
@debug_option
@reports_errors
def check(challenge: str | None, data_dir: Path | None, debug: bool) -> None:
    """Compare the models with the database; exit 1 on drift that needs a manual fix."""
    from .._core.settings import database_url
    from .._storage import schema
    from .._storage.db import database

    settings, loaded = start(challenge, logging.WARNING, data_dir=data_dir)
    path = _file(database_url(settings))
    if not path.is_file():
        raise ConfigError(f"no database at {path} yet: `base-runner db init` (or serve) creates it")
    found = _run(lambda: schema.check(database.read_engine))
    for drift in found:
        click.echo(("drift: " if drift.blocking else "note: ") + drift.line)
    blocking = [drift for drift in found if drift.blocking]
    if blocking:
        click.echo(
            f"{plural(len(blocking), 'difference')} to fix by hand (`base-runner db exec` applies a printed fix); "
            "/ready answers 503 until then",
            err=True,
        )
        raise SystemExit(1)
    click.echo(f"the database matches the models of {loaded.name}")


@db.command(name="exec")
@click.argument("statements", nargs=-1, required=True, metavar="SQL...")
@data_dir_option
@click.option("--dry-run", is_flag=True, help="Run the SQL in a transaction that is rolled back; write nothing.")
@reports_errors
def exec_(statements: tuple[str, ...], data_dir: Path | None, dry_run: bool) -> None:
    """Apply a fix `db check` printed: one SQL statement per argument, in one transaction.

    Refuses while a runner holds the data dir; backs the database up under <data dir>/backups first.
    """
    from .._core.settings import database_url, load_settings
    from .._storage.sql_fix import apply

    settings = load_settings(data_dir=data_dir)
    applied = apply(settings.data_dir, _file(database_url(settings)), list(statements), dry_run=dry_run)
    if applied.backup is not None:
        click.echo(f"backup: {applied.backup}")
    for statement, changed in applied.statements:
        click.echo(f"{'would run' if dry_run else 'ran'}: {statement} ({plural(changed, 'row')} changed)")
    if dry_run:
        click.echo("dry run: every statement ran, and all of it was rolled back; nothing was written")
    else:
        click.echo("committed; `base-runner db check` tells whether the database now matches the models")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def inspect_file(path: Path) -> dict[str, Any]:
    """Facts about the database file at ``path``, read through a read-only connection."""
    from .._storage.db import sqlite_version

    if not path.is_file():
        raise ConfigError(f"no database at {path}")
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        names = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        tables = {name: conn.execute(f"SELECT count(*) FROM {_quote(name)}").fetchone()[0] for name in names}
    finally:
        conn.close()
    wal = path.with_name(path.name + "-wal")
    return {
        "path": str(path),
        "size": path.stat().st_size,
        "journal_mode": journal,
        "sqlite_version": sqlite_version(),
        "wal_size": wal.stat().st_size if wal.exists() else 0,
        "tables": tables,
    }


@db.command()
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@reports_errors
def inspect(data_dir: Path | None, as_json: bool) -> None:
    """Path, size, journal mode, SQLite version, WAL size and row counts; never writes."""
    from .._core.settings import database_url, load_settings

    settings = load_settings(data_dir=data_dir)
    facts = inspect_file(_file(database_url(settings)))
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    click.echo(f"path: {facts['path']}")
    click.echo(f"size: {facts['size']} bytes")
    click.echo(f"journal mode: {facts['journal_mode']}")
    click.echo(f"sqlite: {facts['sqlite_version']}")
    click.echo(f"wal: {facts['wal_size']} bytes")
    click.echo(f"tables: {len(facts['tables'])}")
    width = max((len(name) for name in facts["tables"]), default=0)
    for name, rows in facts["tables"].items():
        click.echo(f"  {name.ljust(width)}  {plural(rows, 'row')}")
