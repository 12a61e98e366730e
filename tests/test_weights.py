"""Weights validation, errors, timeout and cache, on the lab challenge whose get_weights the test steers."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from wire_schemas import ErrorResponse, without_id

from base_runner import database


@pytest.fixture
def challenge_slug() -> str:
    return "lab"


@pytest.fixture
def lab():
    from runner_testbed import lab

    lab.BEHAVIOUR, lab.CALLS = {"5Lab": 1.0}, 0
    yield lab
    lab.BEHAVIOUR = {"5Lab": 1.0}


async def write_something() -> None:
    async with database.session() as session:
        await session.execute(text("CREATE TABLE IF NOT EXISTS scratch (x INTEGER)"))
        await session.execute(text("INSERT INTO scratch VALUES (1)"))
        await session.commit()


async def test_invalid_entries_are_dropped_logged_and_counted(lab, challenge_client: httpx.AsyncClient, caplog) -> None:
    lab.BEHAVIOUR = {
        "5Good": 2,
        "5Zero": 0.0,
        "5Big": 1e300,
        "5Nan": math.nan,
        "5Inf": math.inf,
        "5Neg": -1.0,
        "5Bool": True,
        "5Text": "3",
        "5None": None,
        7: 1.0,
        "": 1.0,
        "x" * 129: 1.0,
    }
    response = await challenge_client.get("/weights")
    assert response.status_code == 200
    body = response.json()
    assert body["weights"] == {"5Good": 2.0, "5Zero": 0.0, "5Big": 1e300}
    assert body["metadata"]["dropped"] == "9"
    logged = caplog.text
    for hotkey, reason in [
        ("'5Nan'", "value is NaN"),
        ("'5Inf'", "value is infinite"),
        ("'5Neg'", "value is negative"),
        ("'5Bool'", "value is a bool, not a real number"),
        ("'5Text'", "value is a str, not a real number"),
        ("7", "hotkey is a int, not a string"),
        ("''", "hotkey is empty"),
    ]:
        assert f"dropped weight for hotkey {hotkey}: {reason}" in logged


async def test_not_a_dict_is_a_json_500(lab, challenge_client: httpx.AsyncClient) -> None:
    lab.BEHAVIOUR = [("5A", 1.0)]
    response = await challenge_client.get("/weights")
    assert response.status_code == 500
    assert without_id(response.json()) == {
        "code": "get_weights_failed",
        "detail": "challenge lab: get_weights returned a list, not a dict",
    }


async def test_raising_is_a_json_500_naming_the_challenge(lab, master_client: httpx.AsyncClient) -> None:
    lab.BEHAVIOUR = ZeroDivisionError("division by zero")
    response = await master_client.get("/internal/v1/get_weights")
    assert response.status_code == 500
    assert response.json()["detail"] == "challenge lab: get_weights raised ZeroDivisionError: division by zero"


class TestTimeout:
    @pytest.fixture
    def challenge_settings(self, challenge_settings):
        return challenge_settings.model_copy(update={"weights_timeout": 0.2})

    async def test_too_slow_is_a_504(self, lab, challenge_client: httpx.AsyncClient) -> None:
        lab.BEHAVIOUR = ("sleep", 5)
        response = await challenge_client.get("/weights")
        assert response.status_code == 504
        assert ErrorResponse.model_validate(response.json()).code == "get_weights_timeout"
        assert "get_weights ran past its 0.2s timeout" in response.json()["detail"]


async def test_failures_are_not_cached(lab, challenge_client: httpx.AsyncClient) -> None:
    lab.BEHAVIOUR = RuntimeError("flaky")
    assert (await challenge_client.get("/weights")).status_code == 500
    lab.BEHAVIOUR = {"5Back": 1.0}
    assert (await challenge_client.get("/weights")).json()["weights"] == {"5Back": 1.0}


async def test_cached_until_a_write_then_single_flight(lab, challenge_client: httpx.AsyncClient) -> None:
    first = (await challenge_client.get("/weights")).content
    assert (await challenge_client.get("/weights")).content == first
    assert lab.CALLS == 1
    lab.BEHAVIOUR = ("sleep", 0.05)
    await write_something()
    responses = await asyncio.gather(*(challenge_client.get("/weights") for _ in range(100)))
    assert {r.json()["weights"]["slow"] for r in responses} == {1.0}
    assert lab.CALLS == 2


async def test_reads_do_not_invalidate_the_cache(lab, challenge_client: httpx.AsyncClient) -> None:
    await challenge_client.get("/weights")
    async with database.session() as session:
        await session.execute(text("SELECT 1"))
        await session.commit()
    await challenge_client.get("/weights")
    assert lab.CALLS == 1


class TestTTL:
    @pytest.fixture
    def challenge_settings(self, challenge_settings):
        return challenge_settings.model_copy(update={"weights_ttl": 0.05})

    async def test_ttl_expires_the_cache(self, lab, challenge_client: httpx.AsyncClient) -> None:
        await challenge_client.get("/weights")
        await asyncio.sleep(0.1)
        await challenge_client.get("/weights")
        assert lab.CALLS == 2


class TestPlainFunction:
    @pytest.fixture
    def challenge_slug(self) -> str:
        return "envspy"

    async def test_plain_def_get_weights_runs(self, challenge_client: httpx.AsyncClient) -> None:
        assert (await challenge_client.get("/weights")).json()["weights"] == {"clean": 1.0}


def test_the_weights_after_a_write_include_it(sites: dict[str, Path], tmp_path: Path, server) -> None:
    # Readers keep computing while each write commits: one that read the
    # database just before the commit must not be cached as current after it.
    served = server(["--challenge", "example", "--data-dir", str(tmp_path)], [sites["example"]])

    async def writes_then_reads() -> list[int]:
        stale = []
        stop = asyncio.Event()
        async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:

            async def read_weights() -> None:
                while not stop.is_set():
                    await client.get("/weights")

            readers = [asyncio.create_task(read_weights()) for _ in range(4)]
            try:
                for n in range(40):
                    hotkey = f"5Race{n}"
                    response = await client.post("/submissions", json={"hotkey": hotkey, "score": 1})
                    assert response.status_code == 201, response.text
                    if hotkey not in (await client.get("/weights")).json()["weights"]:
                        stale.append(n)
            finally:
                stop.set()
                await asyncio.gather(*readers)
        return stale

    assert asyncio.run(writes_then_reads()) == []
