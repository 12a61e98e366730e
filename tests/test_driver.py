"""The driver layer's fewer trips keep the transactions: the write lock from the first statement to the end."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import ROOT, clean_env
from sqlalchemy import text

from base_runner import database


@contextmanager
def other_process_connection() -> Iterator[sqlite3.Connection]:
    """A connection like another process's: no busy wait, its own transactions."""
    conn = sqlite3.connect(database.engine.url.database, timeout=0, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def can_take_write_lock(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc)
        return False
    conn.execute("ROLLBACK")
    return True


async def test_the_write_lock_is_held_from_the_first_statement_to_commit(challenge_app) -> None:
    with other_process_connection() as other:
        async with database.engine.connect() as conn:
            await conn.begin()
            # BEGIN IMMEDIATE travels with the first statement, so nothing is locked yet.
            assert can_take_write_lock(other)
            await conn.exec_driver_sql("SELECT count(*) FROM submissions")
            assert not can_take_write_lock(other)
            await conn.exec_driver_sql("INSERT INTO submissions (hotkey, score) VALUES ('5A', 1)")
            assert not can_take_write_lock(other)
            await conn.commit()
            assert can_take_write_lock(other)
        assert other.execute("SELECT count(*) FROM submissions").fetchone() == (1,)


async def test_an_unfinished_transaction_is_rolled_back_and_unlocked(challenge_app) -> None:
    with other_process_connection() as other:
        async with database.session() as session:
            await session.execute(text("INSERT INTO submissions (hotkey, score) VALUES ('5Gone', 1)"))
            assert not can_take_write_lock(other)
        assert can_take_write_lock(other)
        assert other.execute("SELECT count(*) FROM submissions").fetchone() == (0,)


async def test_a_failed_statement_leaves_the_connection_usable(challenge_app) -> None:
    async with database.session() as session:
        with pytest.raises(Exception, match="no such table"):
            await session.execute(text("SELECT * FROM missing"))
    async with database.session() as session:
        await session.execute(text("INSERT INTO submissions (hotkey, score) VALUES ('5B', 2)"))
        await session.commit()
    async with database.session(readonly=True) as session:
        assert (await session.execute(text("SELECT hotkey FROM submissions"))).scalars().all() == ["5B"]


def test_an_example_write_is_at_most_three_trips_to_the_driver(sites: dict[str, Path], tmp_path: Path) -> None:
    # The bench's own count, on the example's real route: BEGIN IMMEDIATE with the INSERT, then COMMIT.
    env = clean_env([sites["example"], ROOT])
    result = subprocess.run(
        [sys.executable, "-m", "bench.trips", "example", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    trips = json.loads(result.stdout)
    assert trips["example `POST /submissions`"] <= 3
    assert trips["example `get_weights` (uncached)"] <= 3
