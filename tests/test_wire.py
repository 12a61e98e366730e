"""The SDK 1.0 wire shapes everywhere the runner answers: correlation ids, the error envelope, health checks."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from wire_schemas import ErrorResponse, HealthResponse, without_id

from base_runner.testing import MASTER_TOKEN

HEX_ID = re.compile(r"[0-9a-f]{32}")


def envelope(response: httpx.Response) -> ErrorResponse:
    """The response's error envelope, checked against the contract, with the id the header echoes."""
    error = ErrorResponse.model_validate(response.json())
    assert error.correlation_id == response.headers["x-request-id"]
    return error


class TestCorrelationId:
    @pytest.mark.parametrize("path", ["/weights", "/health", "/submissions/5A"])
    async def test_a_sane_id_is_echoed(self, challenge_client: httpx.AsyncClient, path: str) -> None:
        for sent in ("abc-123", "0f8fad5b-d9cb-469f-a165-70867728950e", "trace:1.2_3", "x" * 128):
            response = await challenge_client.get(path, headers={"X-Request-ID": sent})
            assert response.status_code == 200
            assert response.headers["x-request-id"] == sent

    @pytest.mark.parametrize("sent", [None, "", "x" * 129, "has space", "semi;colon", "new\\nline", "é"])
    async def test_otherwise_one_is_generated(self, challenge_client: httpx.AsyncClient, sent: str | None) -> None:
        headers = {} if sent is None else {"X-Request-ID": sent.encode()}
        for path in ("/weights", "/health"):
            response = await challenge_client.get(path, headers=headers)
            assert HEX_ID.fullmatch(response.headers["x-request-id"])
        first, second = (await challenge_client.get("/weights"), await challenge_client.get("/weights"))
        assert first.headers["x-request-id"] != second.headers["x-request-id"]

    @pytest.mark.parametrize("challenge_slug", ["ledger"])
    async def test_challenge_code_reads_it(self, challenge_client: httpx.AsyncClient) -> None:
        response = await challenge_client.get("/correlation", headers={"X-Request-ID": "req-7"})
        assert response.json() == {"correlation_id": "req-7"}
        generated = await challenge_client.get("/correlation")
        assert generated.json()["correlation_id"] == generated.headers["x-request-id"]

    async def test_the_error_names_the_request(self, challenge_client: httpx.AsyncClient) -> None:
        response = await challenge_client.get("/internal/v1/get_weights", headers={"X-Request-ID": "master-run-1"})
        assert envelope(response).correlation_id == "master-run-1"


class TestErrorEnvelope:
    @pytest.mark.parametrize(
        ("headers", "status", "code"),
        [
            ({}, 401, "missing_token"),
            ({"Authorization": "Bearer wrong", "X-Base-Challenge-Slug": "example"}, 401, "invalid_token"),
            ({"Authorization": f"Bearer {MASTER_TOKEN}"}, 400, "missing_slug"),
            ({"Authorization": f"Bearer {MASTER_TOKEN}", "X-Base-Challenge-Slug": "x" * 5000}, 400, "wrong_slug"),
        ],
    )
    async def test_master_auth(
        self, challenge_client: httpx.AsyncClient, headers: dict[str, str], status: int, code: str
    ) -> None:
        response = await challenge_client.get("/internal/v1/get_weights", headers=headers)
        assert (response.status_code, envelope(response).code) == (status, code)

    async def test_unknown_route_is_404(self, challenge_client: httpx.AsyncClient) -> None:
        response = await challenge_client.get("/no/such/route")
        assert response.status_code == 404
        assert envelope(response).code == "not_found"
        assert "GET /no/such/route" in response.json()["detail"]

    @pytest.mark.parametrize(("method", "path"), [("POST", "/weights"), ("DELETE", "/health"), ("PUT", "/version")])
    async def test_wrong_method_is_405_with_allow(self, challenge_client: httpx.AsyncClient, method, path) -> None:
        response = await challenge_client.request(method, path)
        assert response.status_code == 405
        assert envelope(response).code == "method_not_allowed"
        assert "GET" in response.headers["allow"]

    async def test_422_says_which_fields_and_never_echoes_the_input(self, challenge_client: httpx.AsyncClient) -> None:
        huge = "A" * 400_000  # two of them stay under CHALLENGE_MAX_BODY_BYTES
        for body in (
            json.dumps({"hotkey": huge, "score": huge}),
            json.dumps({"hotkey": "5A"}),
            "{" + huge,  # not JSON at all
        ):
            response = await challenge_client.post(
                "/submissions", content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code == 422
            assert len(response.content) < 1024
            assert "AAAAAAAAAA" not in response.text
            assert envelope(response).code == "validation_failed"
        too_large = await challenge_client.post("/submissions", content="A" * 5_000_000)
        assert (too_large.status_code, envelope(too_large).code) == (413, "body_too_large")
        fields = (await challenge_client.post("/submissions", json={"hotkey": "", "score": -1})).json()["detail"]
        assert fields.startswith("2 invalid fields: ") and "body.hotkey" in fields and "body.score" in fields

    @pytest.mark.parametrize(
        ("content", "headers", "detail"),
        [
            (
                '{"hotkey": 5F, "score": 1}',
                {"content-type": "application/json"},
                "the body is not valid JSON (line 1, column 13): expecting ',' delimiter",
            ),
            (
                '{"hotkey": "5F",\n "score": 1,}',
                {"content-type": "application/json"},
                "the body is not valid JSON (line 2, column 13): expecting property name enclosed in double quotes",
            ),
            ('{"hotkey": "5F", "score": 1}', {}, "send Content-Type: application/json"),
            (
                '{"hotkey": "5F", "score": 1}',
                {"content-type": "application/x-www-form-urlencoded"},
                "send Content-Type: application/json (this body came as application/x-www-form-urlencoded)",
            ),
        ],
    )
    async def test_a_body_that_is_not_json_says_what_to_fix(
        self, challenge_client: httpx.AsyncClient, content: str, headers: dict[str, str], detail: str
    ) -> None:
        response = await challenge_client.post("/submissions", content=content, headers=headers)
        assert (response.status_code, envelope(response).code) == (422, "validation_failed")
        assert response.json()["detail"] == detail

    @pytest.mark.parametrize("challenge_slug", ["ledger"])
    async def test_a_challenge_http_exception_keeps_status_and_detail(
        self, challenge_client: httpx.AsyncClient
    ) -> None:
        assert (await challenge_client.post("/claims/k", params={"owner": "alice"})).status_code == 201
        response = await challenge_client.post("/claims/k", params={"owner": "bob"})
        assert response.status_code == 409
        assert without_id(response.json()) == {"code": "conflict", "detail": "k is claimed by alice"}

    @pytest.mark.parametrize("challenge_slug", ["ledger"])
    async def test_the_author_helper_answers_the_same_envelope(self, challenge_client: httpx.AsyncClient) -> None:
        assert (await challenge_client.post("/reservations/k", params={"owner": "alice"})).status_code == 201
        response = await challenge_client.post(
            "/reservations/k", params={"owner": "bob"}, headers={"X-Request-ID": "r1"}
        )
        assert response.status_code == 409
        assert response.json() == {
            "code": "already_claimed",
            "detail": "k is claimed",
            "correlation_id": "r1",
            "expected": "an unclaimed key",
            "actual": "alice",
        }
        envelope(response)


class TestChecks:
    async def test_a_failing_part_makes_the_runner_unready_and_refuses_writes(
        self, challenge_app, challenge_client: httpx.AsyncClient
    ) -> None:
        runtime = challenge_app.state.runtime
        runtime.report("disk", "the data volume is full")
        ready = await challenge_client.get("/ready")
        assert ready.status_code == 503
        body = HealthResponse.model_validate(ready.json())
        assert (body.status, body.ready) == ("unhealthy", False)
        assert {c.name: c.status for c in body.checks} == {
            "lifespan": "ok",
            "database": "ok",
            "schema": "ok",
            "workers": "ok",
            "auth": "ok",
            "jobs": "ok",
            "disk": "unhealthy",
        }
        health = await challenge_client.get("/health")
        assert health.status_code == 200 and health.json() == ready.json()
        refused = await challenge_client.post("/submissions", json={"hotkey": "5A", "score": 1})
        assert (refused.status_code, envelope(refused).code) == (503, "runtime_not_ready")
        assert "disk" in refused.json()["detail"] and refused.headers["retry-after"]
        for method in ("GET", "HEAD", "OPTIONS"):
            assert (await challenge_client.request(method, "/submissions/5A")).status_code != 503
        runtime.report("disk", None)
        assert (await challenge_client.post("/submissions", json={"hotkey": "5A", "score": 1})).status_code == 201
        assert (await challenge_client.get("/ready")).status_code == 200

    async def test_an_optional_part_only_degrades(self, challenge_app, challenge_client: httpx.AsyncClient) -> None:
        runtime = challenge_app.state.runtime
        runtime.declare("pusher", required=False)
        assert HealthResponse.model_validate((await challenge_client.get("/health")).json()).status == "ok"
        runtime.report("pusher", "the master answers 503", key="last")
        ready = await challenge_client.get("/ready")
        body = HealthResponse.model_validate(ready.json())
        assert (ready.status_code, body.status, body.ready) == (200, "degraded", True)
        assert (await challenge_client.post("/submissions", json={"hotkey": "5A", "score": 1})).status_code == 201
        runtime.report("pusher", None)
        assert (await challenge_client.get("/ready")).json()["status"] == "ok"

    async def test_a_part_reporting_through_problems_still_counts(
        self, challenge_app, challenge_client: httpx.AsyncClient
    ) -> None:
        challenge_app.state.runtime.problems["disk:lock"] = "another runner holds the data dir"
        body = HealthResponse.model_validate((await challenge_client.get("/ready")).json())
        assert [c.name for c in body.checks if c.status != "ok"] == ["disk"]

    async def test_a_missing_master_token_keeps_the_master_away_but_not_the_miners(
        self, challenge_app, challenge_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        challenge_app.state.runtime.probes["auth:token"] = lambda: "no master token is configured"
        ready = await challenge_client.get("/ready")
        assert (ready.status_code, [c["name"] for c in ready.json()["checks"] if c["status"] != "ok"]) == (
            503,
            ["auth"],
        )
        assert (await challenge_client.post("/submissions", json={"hotkey": "5A", "score": 1})).status_code == 201
        status = (await challenge_client.get("/internal/status")).json()
        assert status["checks"]["auth"] == {
            "status": "unhealthy",
            "required": True,
            "reasons": ["no master token is configured"],
        }

    def test_check_names_are_lowercase_identifiers(self, challenge_app) -> None:
        with pytest.raises(ValueError, match="not a lowercase identifier"):
            challenge_app.state.runtime.declare("Disk Space")
