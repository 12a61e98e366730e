"""The jobs table: in the challenge's own file, owned by the runner, never part of the challenge's models.

It lives in a ``MetaData`` of its own, not in :class:`~base_runner.Base`'s, so
schema drift (which compares the challenge's models with the file) never
reports it, and the challenge's ``create_all`` never touches it. The runner
creates it at startup and evolves it in place (:func:`ensure`): a column a
newer runner added is added with ``ALTER TABLE``, a missing index created;
nothing is ever dropped, so an older runner still reads a newer table.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Float, Index, Integer, MetaData, Table, Text, inspect, text
from sqlalchemy.schema import CreateColumn

#: States a job is in; ``queued`` and ``running`` are live, the others final.
QUEUED, RUNNING, SUCCEEDED, DEAD, CANCELLED = "queued", "running", "succeeded", "dead", "cancelled"
STATES = (QUEUED, RUNNING, SUCCEEDED, DEAD, CANCELLED)
LIVE = (QUEUED, RUNNING)

metadata = MetaData()

jobs = Table(
    "base_runner_jobs",
    metadata,
    # AUTOINCREMENT: an id is never reused after its job was pruned, so an id in a log always names one job.
    Column("id", Integer, primary_key=True),
    Column("task", Text, nullable=False),
    #: The task's keyword arguments, as JSON.
    Column("args", Text, nullable=False),
    Column("key", Text),
    Column("state", Text, nullable=False),
    Column("priority", Integer, nullable=False, server_default=text("0")),
    #: UNIX time from which a queued job may run (its delay, or its retry's backoff).
    Column("run_at", Float, nullable=False),
    #: Attempts started, the running one included.
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    #: Stamped fresh by each claim; every write about a running job checks it.
    Column("lease_token", Text),
    Column("lease_expires", Float),
    Column("enqueued_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("progress", Float),
    Column("message", Text),
    #: The last failure: its one line, and its traceback.
    Column("error", Text),
    Column("traceback", Text),
    #: The correlation id of the request that enqueued the job.
    Column("correlation_id", Text),
    sqlite_autoincrement=True,
)

# What the claim reads: due jobs of one task, by priority then age, from the queued ones alone.
Index(
    "ix_base_runner_jobs_due",
    jobs.c.task,
    jobs.c.priority.desc(),
    jobs.c.run_at,
    jobs.c.id,
    sqlite_where=jobs.c.state == QUEUED,
)
# One live job per key: a second enqueue with the key finds the first (and this refuses a race past it).
Index(
    "ux_base_runner_jobs_live_key",
    jobs.c.key,
    unique=True,
    sqlite_where=jobs.c.state.in_(LIVE) & jobs.c.key.is_not(None),
)
# Counts by state (status, metrics), expired leases, and pruning of finished jobs by age.
Index("ix_base_runner_jobs_state", jobs.c.state, jobs.c.task, jobs.c.finished_at)


def ensure(conn: Any) -> list[str]:
    """Create the table, or bring an older one up to date; return what was added (a sync connection)."""
    inspector = inspect(conn)
    if not inspector.has_table(jobs.name):
        metadata.create_all(conn)
        return [jobs.name]
    added = []
    live = {column["name"] for column in inspector.get_columns(jobs.name)}
    for column in jobs.columns:
        if column.name not in live:
            ddl = CreateColumn(column).compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {jobs.name} ADD COLUMN {ddl}")
            added.append(f"{jobs.name}.{column.name}")
    indexes = {index["name"] for index in inspector.get_indexes(jobs.name)}
    for index in jobs.indexes:
        if index.name not in indexes:
            index.create(conn)
            added.append(str(index.name))
    return added
