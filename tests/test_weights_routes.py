"""The weights routes answered in front of FastAPI: the other methods still go through its router."""

from __future__ import annotations

import httpx


async def test_head_is_answered_by_the_route(challenge_client: httpx.AsyncClient) -> None:
    body = (await challenge_client.get("/weights")).content
    response = await challenge_client.head("/weights")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(body)


async def test_other_methods_are_refused_by_the_route(
    challenge_client: httpx.AsyncClient, master_client: httpx.AsyncClient
) -> None:
    for client, path in ((challenge_client, "/weights"), (master_client, "/internal/v1/get_weights")):
        response = await client.post(path, json={})
        assert response.status_code == 405
        assert "GET" in response.headers["allow"]


async def test_cached_body_is_served_as_json(challenge_client: httpx.AsyncClient) -> None:
    await challenge_client.post("/submissions", json={"hotkey": "5Fast", "score": 4})
    first = await challenge_client.get("/weights")
    second = await challenge_client.get("/weights")
    assert first.headers["content-type"] == "application/json"
    assert int(first.headers["content-length"]) == len(first.content)
    assert second.content == first.content
    assert first.json()["weights"] == {"5Fast": 4.0}
