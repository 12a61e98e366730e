"""Schema drift: where the live database no longer matches the challenge's models.

``create_all`` creates missing tables and never alters existing ones, and
there is no migration tool here, so a model that gained a column or changed
a column's type needs a manual fix. This module finds those differences and
says how to fix each. Columns the database has and the models lack are fine:
that is a database written by a newer model set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, inspect
from sqlalchemy.schema import CreateColumn, CreateIndex

from .db import Base

REBUILD_DOC = "https://www.sqlite.org/lang_altertable.html#otheralter"


@dataclass(frozen=True)
class Drift:
    """One difference between the models and the database."""

    #: What differs and the manual fix, in one line.
    line: str
    #: Whether the challenge cannot work until it is fixed (a missing index only slows it).
    blocking: bool = True


def affinity(declared: str) -> str:
    """SQLite's type affinity for a declared column type (https://www.sqlite.org/datatype3.html)."""
    upper = declared.upper()
    if "INT" in upper:
        return "INTEGER"
    if any(word in upper for word in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in upper or not upper:
        return "BLOB"
    if any(word in upper for word in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def _add_column_fix(table: str, column: Column[Any], dialect: Any) -> str:
    ddl = str(CreateColumn(column).compile(dialect=dialect))
    if not column.nullable and column.server_default is None:
        ddl += " DEFAULT <value>"  # SQLite refuses to add a NOT NULL column without one
    return f"ALTER TABLE {table} ADD COLUMN {ddl}"


def find_drift(conn: Any) -> list[Drift]:
    """Compare every model table with the database on ``conn`` (a sync connection)."""
    inspector = inspect(conn)
    existing = set(inspector.get_table_names())
    dialect = conn.dialect
    found: list[Drift] = []
    for table in Base.metadata.sorted_tables:
        if table.name not in existing:
            found.append(Drift(f"table {table.name} is missing; fix: base-runner db init (serve also creates it)"))
            continue
        live = {column["name"]: column for column in inspector.get_columns(table.name)}
        for column in table.columns:
            model_type = column.type.compile(dialect=dialect)
            if column.name not in live:
                found.append(
                    Drift(
                        f"table {table.name}: column {column.name} ({model_type}) is missing; "
                        f"fix: {_add_column_fix(table.name, column, dialect)}"
                    )
                )
                continue
            live_type = live[column.name]["type"].compile(dialect=dialect)
            if affinity(live_type) != affinity(model_type):
                found.append(
                    Drift(
                        f"table {table.name}: column {column.name} is {live_type} in the database but "
                        f"{model_type} in the model; SQLite cannot change a column's type in place: "
                        f"rebuild the table as {REBUILD_DOC} shows"
                    )
                )
        live_indexes = {index["name"] for index in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in live_indexes:
                ddl = str(CreateIndex(index).compile(dialect=dialect))
                found.append(Drift(f"table {table.name}: index {index.name} is missing; fix: {ddl}", blocking=False))
    return found


async def check(engine: Any) -> list[Drift]:
    """:func:`find_drift` on an async engine, through one short read."""
    async with engine.connect() as conn:
        return await conn.run_sync(find_drift)
