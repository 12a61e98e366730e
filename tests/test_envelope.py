"""Every refusal the runner makes itself, at every layer, answers the one SDK 1.0 error envelope.

The refusals are collected once from real ``serve`` processes, by HTTP and,
for what the connection layer refuses before any request exists, by raw
socket; each body must be an ``ErrorResponse`` whose ``correlation_id`` is the
``X-Request-ID`` the same answer carries.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import Served, start_server
from test_limits import connect, read_response
from wire_schemas import ErrorResponse

TOKEN = "envelope-token"
OWNER_TOKEN = "envelope-owner"
MASTER = {"Authorization": f"Bearer {TOKEN}", "X-Base-Challenge-Slug": "bounty"}
SUBMISSION = {"project_id": "p1", "github_url": "https://github.com/a/b", "miner_hotkey": "5M"}


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def of(response: httpx.Response) -> Answer:
    return Answer(response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content)


def raw(url: str, head: bytes, wait: float = 0) -> Answer:
    """Send ``head`` on a new connection, wait, and read the answer until the server closes it."""
    with connect(url) as sock:
        sock.sendall(head)
        time.sleep(wait)
        answer = read_response(sock)
    top, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = top.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        assert name.lower() not in headers, f"{name} sent twice: {top!r}"
        headers[name.lower()] = value.strip()
    return Answer(int(status_line.split(" ", 2)[1]), headers, body)


def _bounty_refusals(served: Served) -> dict[str, tuple[int, str, Callable[[], Answer]]]:
    url = served.url
    client = httpx.Client(base_url=url, timeout=10)
    sent = {"X-Request-ID": "envelope-1"}
    return {
        "body too large": (413, "body_too_large", lambda: of(client.post("/submissions", content=b"x" * 8192))),
        "body too slow": (
            408,
            "body_timeout",
            lambda: raw(url, b"POST /submissions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{", wait=1.5),
        ),
        "head too large": (
            431,
            "headers_too_large",
            lambda: raw(url, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n"),
        ),
        "too many headers": (
            431,
            "too_many_headers",
            lambda: raw(url, b"GET /health HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % n for n in range(40)) + b"\r\n"),
        ),
        "head too slow": (408, "header_timeout", lambda: raw(url, b"GET /health HTTP/1.1\r\nHost: x\r\n", wait=1.5)),
        "credential header twice": (
            400,
            "duplicate_header",
            lambda: of(client.get("/projects", headers=[("X-Owner-Token", "a"), ("X-Owner-Token", "b")])),
        ),
        "weights without the token": (401, "missing_token", lambda: of(client.get("/internal/v1/get_weights"))),
        "bridge with a wrong token": (
            401,
            "invalid_token",
            lambda: of(
                client.post(
                    "/internal/v1/bridge/submissions",
                    json=SUBMISSION,
                    headers={**MASTER, "Authorization": "Bearer wrong"},
                )
            ),
        ),
        "weights with no slug": (
            400,
            "missing_slug",
            lambda: of(client.get("/internal/v1/get_weights", headers={"Authorization": f"Bearer {TOKEN}"})),
        ),
        "owner route without the owner token": (
            401,
            "missing_owner_token",
            lambda: of(client.post("/admin/projects", json={"project_id": "p", "title": "T", "description": "D"})),
        ),
        "no such route": (404, "not_found", lambda: of(client.get("/no/such/route", headers=sent))),
        "wrong method": (405, "method_not_allowed", lambda: of(client.delete("/health", headers=sent))),
        "invalid body": (422, "validation_failed", lambda: of(client.post("/submissions", json={}, headers=sent))),
        "value sqlite cannot hold": (
            422,
            "validation_failed",
            lambda: of(client.get("/submissions/9223372036854775808", headers=sent)),
        ),
    }


@pytest.fixture(scope="module")
def answers(sites: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple]]:
    """Each refusal's expected status and code, and the answer the runner gave."""
    folder = tmp_path_factory.mktemp("envelope")
    (folder / "bounty").mkdir()
    (folder / "drifted").mkdir()
    # The example's table without its score column: the schema check fails, writes are refused.
    with sqlite3.connect(folder / "drifted" / "challenge.sqlite3") as conn:
        conn.execute("CREATE TABLE submissions (id INTEGER PRIMARY KEY, hotkey VARCHAR(128))")
    started = []
    try:
        bounty = start_server(
            ["--challenge", "bounty", "--data-dir", str(folder / "bounty")],
            [sites["bounty"]],
            folder / "bounty.log",
            CHALLENGE_SHARED_TOKEN=TOKEN,
            CHALLENGE_OWNER_TOKEN=OWNER_TOKEN,
            CHALLENGE_MAX_BODY_BYTES="4096",
            CHALLENGE_BODY_TIMEOUT="0.5",
            CHALLENGE_HEADER_TIMEOUT="0.5",
            CHALLENGE_MAX_HEADERS="30",
        )
        started.append(bounty)
        drifted = start_server(["--data-dir", str(folder / "drifted")], [sites["example"]], folder / "drifted.log")
        started.append(drifted)
        refusals = _bounty_refusals(bounty)
        refusals["write while not ready"] = (
            503,
            "runtime_not_ready",
            lambda: of(httpx.post(drifted.url + "/submissions", json={"hotkey": "5A", "score": 1}, timeout=10)),
        )
        yield {name: (status, code, ask()) for name, (status, code, ask) in refusals.items()}
    finally:
        for served in started:
            served.stop()


REFUSALS = [
    "body too large",
    "body too slow",
    "head too large",
    "too many headers",
    "head too slow",
    "credential header twice",
    "weights without the token",
    "bridge with a wrong token",
    "weights with no slug",
    "owner route without the owner token",
    "no such route",
    "wrong method",
    "invalid body",
    "value sqlite cannot hold",
    "write while not ready",
]


@pytest.mark.parametrize("refusal", REFUSALS)
def test_every_refusal_is_the_envelope_naming_its_request(answers: dict[str, tuple], refusal: str) -> None:
    status, code, answer = answers[refusal]
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/json", answer.headers
    error = ErrorResponse.model_validate(json.loads(answer.body))
    assert error.code == code
    assert error.correlation_id == answer.headers["x-request-id"]
    # Compact, as every route's JSON is, whichever layer refused.
    assert answer.body == json.dumps(json.loads(answer.body), ensure_ascii=False, separators=(",", ":")).encode()


def test_the_collection_is_complete(answers: dict[str, tuple]) -> None:
    assert sorted(answers) == sorted(REFUSALS)


def test_a_sent_request_id_is_the_one_named(answers: dict[str, tuple]) -> None:
    for refusal in ("no such route", "wrong method", "invalid body", "value sqlite cannot hold"):
        assert json.loads(answers[refusal][2].body)["correlation_id"] == "envelope-1", refusal


def test_the_openapi_error_schema_is_the_envelope(sites: dict[str, Path], tmp_path: Path, server) -> None:
    served = server(["--challenge", "bounty", "--data-dir", str(tmp_path)], [sites["bounty"]])
    schema = httpx.get(served.url + "/openapi.json", timeout=10).json()["components"]["schemas"]["ErrorResponse"]
    fields = ErrorResponse.model_fields
    assert set(schema["properties"]) == set(fields)
    assert set(schema["required"]) == {name for name, field in fields.items() if field.is_required()}
    # What the envelope model bounds, the document bounds the same.
    for name in ("detail", "correlation_id"):
        limits = {type(m).__name__: m for m in fields[name].metadata}
        assert schema["properties"][name]["minLength"] == limits["MinLen"].min_length, name
        assert schema["properties"][name]["maxLength"] == limits["MaxLen"].max_length, name
    assert served.stop() == 0
