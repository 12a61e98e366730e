"""The fixtures for calls as the owner and as the master's bridge, and timestamps that keep their zone."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert, select
from sqlalchemy.exc import StatementError

from base_runner import UTCDateTime
from base_runner.testing import BRIDGED_HOTKEY

PROJECT = {"project_id": "cli-ui", "title": "Best CLI UI/UX", "description": "Improve CLI UX"}
WORK = {"project_id": "cli-ui", "github_url": "https://github.com/miner/work"}


@pytest.fixture
def challenge_slug() -> str:
    return "bounty"


async def test_owner_client_calls_as_the_owner(
    owner_client: httpx.AsyncClient, challenge_client: httpx.AsyncClient
) -> None:
    assert (await owner_client.post("/admin/projects", json=PROJECT)).status_code == 200
    refused = await challenge_client.post("/admin/projects", json=PROJECT)
    assert refused.status_code in (401, 503), "anyone else is refused"


async def test_bridge_client_calls_as_the_masters_bridge(
    owner_client: httpx.AsyncClient, bridge_client: httpx.AsyncClient, challenge_client: httpx.AsyncClient
) -> None:
    await owner_client.post("/admin/projects", json=PROJECT)
    bridged = await bridge_client.post("/internal/v1/bridge/submissions", json=WORK)
    assert bridged.status_code == 200, bridged.text
    assert bridged.json()["miner_hotkey"] == BRIDGED_HOTKEY
    other = await bridge_client.post(
        "/internal/v1/bridge/submissions", json=WORK, headers={"X-Base-Verified-Hotkey": "5Other"}
    )
    assert other.status_code == 200 and other.json()["miner_hotkey"] == "5Other"
    # Without the master's token the same request is refused: the fixture is what makes it the master's.
    assert (await challenge_client.post("/internal/v1/bridge/submissions", json=WORK)).status_code == 401


@pytest.mark.parametrize(
    "challenge_env", [{"CHALLENGE_CLOSE_INTERVAL": "0.05", "CHALLENGE_OWNER_TOKEN": "owner-from-env"}]
)
async def test_challenge_env_reaches_the_settings_before_the_worker_starts(
    challenge_client: httpx.AsyncClient,
) -> None:
    owner = {"X-Owner-Token": "owner-from-env"}
    late = {**PROJECT, "deadline_at": "2000-01-01T00:00:00Z"}
    assert (await challenge_client.post("/admin/projects", json=late, headers=owner)).status_code == 200
    # The closing worker started with the app: it sweeps every 0.05 s only if it read the value then,
    # where a patch in the test's body would come after its first sweep and its 60 s sleep.
    deadline = time.monotonic() + 10
    while (await challenge_client.get("/projects/cli-ui")).json()["status"] != "completed":
        assert time.monotonic() < deadline, "the worker did not sweep with CHALLENGE_CLOSE_INTERVAL=0.05"
        await asyncio.sleep(0.05)


def test_utc_datetime_reads_back_aware_in_utc() -> None:
    table = Table("events", MetaData(), Column("id", Integer, primary_key=True), Column("at", UTCDateTime))
    engine = create_engine("sqlite://")
    table.metadata.create_all(engine)
    paris = datetime(2026, 7, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    with engine.begin() as conn:
        conn.execute(insert(table).values(at=paris))
        (read,) = conn.execute(select(table.c.at)).scalars()
        assert read == paris and read.tzinfo is UTC and read.hour == 12
        assert read < datetime.now(UTC), "compares with an aware now() instead of raising"
        with pytest.raises(StatementError, match="UTCDateTime needs an aware datetime, got the naive 2026-07-01T14:30"):
            conn.execute(insert(table).values(at=datetime(2026, 7, 1, 14, 30)))
    engine.dispose()
