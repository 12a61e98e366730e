"""The database helpers challenge code uses, on a real SQLite file."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from base_runner import database
from base_runner._storage.db import has_wal_reset_bug


async def test_connection_settings(challenge_app) -> None:
    async with database.engine.connect() as conn:
        pragmas = {
            name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
            for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
        }
    # synchronous 2 is FULL: every commit is on disk before it is acknowledged.
    assert pragmas == {"journal_mode": "wal", "synchronous": 2, "busy_timeout": 10_000, "foreign_keys": 1}


class TestNormalSync:
    @pytest.fixture
    def challenge_settings(self, challenge_settings):
        return challenge_settings.model_copy(update={"synchronous": "NORMAL"})

    async def test_normal_is_an_opt_in(self, challenge_app) -> None:
        async with database.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA synchronous")).scalar() == 1


async def test_readonly_session_cannot_write(challenge_app) -> None:
    async with database.session(readonly=True) as session:
        with pytest.raises(OperationalError, match="readonly"):
            await session.execute(text("INSERT INTO submissions (hotkey, score) VALUES ('5A', 1)"))


async def test_uncommitted_changes_are_rolled_back_and_reported(challenge_app, caplog) -> None:
    from example_challenge.models import Submission

    async with database.session() as session:
        session.add(Submission(hotkey="5Forgot", score=1))
    assert "closed with changes never committed" in caplog.text
    async with database.session(readonly=True) as session:
        assert (await session.execute(text("SELECT count(*) FROM submissions"))).scalar() == 0


async def test_a_read_then_write_session_sees_its_own_snapshot(challenge_app) -> None:
    async with database.session() as session:
        await session.execute(text("SELECT count(*) FROM submissions"))
        await session.execute(text("INSERT INTO submissions (hotkey, score) VALUES ('5A', 1)"))
        await session.commit()
    async with database.session(readonly=True) as session:
        assert (await session.execute(text("SELECT count(*) FROM submissions"))).scalar() == 1


@pytest.mark.parametrize(
    ("version", "affected"),
    [
        ("3.6.23", False),
        ("3.7.0", True),
        ("3.40.1", True),
        ("3.44.5", True),
        ("3.44.6", False),
        ("3.50.6", True),
        ("3.50.7", False),
        ("3.51.2", True),
        ("3.51.3", False),
        ("3.52.0", False),
    ],
)
def test_wal_reset_bug_versions(version: str, affected: bool) -> None:
    assert has_wal_reset_bug(version) is affected
