"""The example challenge through a real app: the seed's route, writes, weights, the standard routes."""

from __future__ import annotations

import random

import httpx
from sqlalchemy import func, select
from wire_schemas import ErrorResponse, HealthResponse, WeightsResponse, version_response

from base_runner import __version__
from base_runner.testing import assert_valid_weights


async def test_seed_route_reads_what_was_written(challenge_client: httpx.AsyncClient) -> None:
    for score in (3, 9, 4):
        response = await challenge_client.post("/submissions", json={"hotkey": "5Alice", "score": score})
        assert response.status_code == 201
        assert response.json()["score"] == score
    await challenge_client.post("/submissions", json={"hotkey": "5Bob", "score": 1})
    # The seed's query has no ORDER BY: compare as a multiset.
    assert sorted((await challenge_client.get("/submissions/5Alice")).json()) == [3, 4, 9]
    assert (await challenge_client.get("/submissions/nobody")).json() == []


async def test_bad_submission_is_422_and_writes_nothing(challenge_client: httpx.AsyncClient, challenge_session) -> None:
    from example_challenge.models import Submission

    for body in (
        {"hotkey": "", "score": 1},
        {"hotkey": "5A", "score": -1},
        {"hotkey": "5A"},
        {"hotkey": "x" * 129, "score": 1},
    ):
        assert (await challenge_client.post("/submissions", json=body)).status_code == 422
    assert (await challenge_session.execute(select(func.count()).select_from(Submission))).scalar() == 0


async def test_weights_are_each_hotkeys_best_score(
    challenge_client: httpx.AsyncClient, master_client: httpx.AsyncClient
) -> None:
    assert (await challenge_client.get("/weights")).json()["weights"] == {}
    for hotkey, score in [("5A", 2), ("5A", 7), ("5B", 0), ("5C", 5), ("5C", 1)]:
        await challenge_client.post("/submissions", json={"hotkey": hotkey, "score": score})
    public = (await challenge_client.get("/weights")).json()
    assert public["weights"] == {"5A": 7.0, "5B": 0.0, "5C": 5.0}
    internal = (await master_client.get("/internal/v1/get_weights")).json()
    assert internal["weights"] == public["weights"]
    assert internal["challenge_slug"] == "example"
    assert isinstance(internal["epoch"], int)
    assert internal["metadata"]["computed_at"].endswith("Z") and internal["metadata"]["dropped"] == "0"
    assert_valid_weights(internal)
    WeightsResponse.model_validate(internal)


async def test_standard_routes(challenge_client: httpx.AsyncClient) -> None:
    health = (await challenge_client.get("/health")).json()
    # What the older master's gate reads of /health...
    assert (health["status"], health["slug"], health["version"]) == ("ok", "example", "0.1.0")
    assert HealthResponse.model_validate(health).ready
    version = (await challenge_client.get("/version")).json()
    # ... and of /version.
    assert (version["api_version"], version["challenge_version"]) == ("1.0", "0.1.0")
    assert {"get_weights", "proxy_routes", "async_sqlalchemy"} <= set(version["capabilities"])
    assert version_response(version).sdk_version == "1.0.0"
    assert version["runner_version"] == __version__
    ready = await challenge_client.get("/ready")
    assert ready.status_code == 200 and ready.json() == health


async def test_unhandled_error_in_a_route_is_json_naming_the_challenge(challenge_app, caplog) -> None:
    @challenge_app.get("/explode")
    async def explode() -> None:
        raise RuntimeError("kaboom")

    # As uvicorn does: the exception is logged after the 500 is sent, not raised to the client.
    transport = httpx.ASGITransport(app=challenge_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://challenge") as client:
        response = await client.get("/explode", headers={"X-Request-ID": "trace-42"})
    assert response.status_code == 500
    error = ErrorResponse.model_validate(response.json())
    assert error.code == "internal_error" and "example" in error.detail and "kaboom" not in error.detail
    assert error.correlation_id == response.headers["x-request-id"] == "trace-42"
    (logged,) = [r.getMessage() for r in caplog.records if "GET /explode raised RuntimeError" in r.getMessage()]
    assert "kaboom" in logged and "correlation id trace-42" in logged


async def test_weights_agree_with_each_hotkeys_best_over_many_hotkeys(
    challenge_client: httpx.AsyncClient, challenge_session
) -> None:
    from example_challenge.models import Submission

    rng = random.Random(8)
    # Hotkeys that share prefixes and differ in case, where a walk over the index could skip one.
    hotkeys = [f"5{prefix}{n}" for prefix in ("A", "a", "AA", "Ab") for n in range(60)]
    best: dict[str, float] = {}
    for _ in range(1500):
        hotkey, score = rng.choice(hotkeys), rng.randrange(1000)
        challenge_session.add(Submission(hotkey=hotkey, score=score))
        best[hotkey] = max(best.get(hotkey, 0.0), float(score))
    await challenge_session.commit()
    assert (await challenge_client.get("/weights")).json()["weights"] == best
