"""Values a client sends that the database cannot hold, or that would break the answers reading them back."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from conftest import alarms, logged, tracebacks
from wire_schemas import ErrorResponse, invalid_fields

OWNER = {"X-Owner-Token": "owner-token"}
TOKEN = "values-token"


@pytest.fixture
def example(sites: dict[str, Path], tmp_path: Path, server):
    return server(["--data-dir", str(tmp_path)], [sites["example"]], CHALLENGE_SHARED_TOKEN=TOKEN)


@pytest.fixture
def bounty(sites: dict[str, Path], tmp_path: Path, server):
    served = server(
        ["--data-dir", str(tmp_path)],
        [sites["bounty"]],
        CHALLENGE_SHARED_TOKEN=TOKEN,
        CHALLENGE_OWNER_TOKEN="owner-token",
    )
    with served.client() as client:
        project = {"project_id": "p1", "title": "P", "description": "d"}
        assert client.post("/admin/projects", json=project, headers=OWNER).status_code == 200
    return served


def post_raw(client, path: str, text: str, **headers: str):
    # Raw text: json= would refuse to encode a lone surrogate, which JSON itself allows as an escape.
    return client.post(path, content=text.encode(), headers={"Content-Type": "application/json", **headers})


@pytest.mark.parametrize(
    ("body", "loc", "message"),
    [
        ('{"hotkey": "5A", "score": 9223372036854775808}', ["body", "score"], "integer out of range"),
        # pydantic's own check of a constrained string finds it first.
        ('{"hotkey": "5\\ud800", "score": 1}', ["body", "hotkey"], "unicode string"),
    ],
)
def test_example_refuses_what_sqlite_cannot_hold(example, body: str, loc: list[str], message: str) -> None:
    with example.client() as client:
        response = post_raw(client, "/submissions", body)
        assert response.status_code == 422, response.text
        assert message in invalid_fields(response.json(), loc)
        assert client.get("/submissions/5A").json() == []
        # The largest integer the database holds is still taken.
        response = post_raw(client, "/submissions", '{"hotkey": "5A", "score": 9223372036854775807}')
        assert response.status_code == 201
    assert tracebacks(example.records()) == []


@pytest.mark.parametrize(
    ("method", "path", "body", "loc", "headers"),
    [
        ("GET", "/submissions/9223372036854775808", None, ["path", "submission_id"], {}),
        ("GET", "/submissions/-9223372036854775809", None, ["path", "submission_id"], {}),
        (
            "POST",
            "/admin/reviews",
            '{"submission_id": 99999999999999999999, "score": 1}',
            ["body", "submission_id"],
            OWNER,
        ),
        (
            "POST",
            "/admin/submissions/18446744073709551616/reward",
            '{"weight": 1}',
            ["path", "submission_id"],
            OWNER,
        ),
        (
            "POST",
            "/submissions",
            '{"project_id": "p1", "github_url": "https://github.com/a/b", "miner_hotkey": "\\udc00"}',
            ["body", "miner_hotkey"],
            {},
        ),
        (
            "POST",
            "/admin/emissions",
            '{"emissions": [{"hotkey": "5A", "weight": 1, "submission_id": 9223372036854775808}]}',
            ["body", "emissions", 0, "submission_id"],
            OWNER,
        ),
    ],
)
def test_bounty_refuses_what_sqlite_cannot_hold(bounty, method, path, body, loc, headers) -> None:
    with bounty.client() as client:
        response = client.request(
            method,
            path,
            content=None if body is None else body.encode(),
            headers={"Content-Type": "application/json", **headers},
        )
        assert response.status_code == 422, response.text
        invalid_fields(response.json(), loc)
    assert alarms(bounty.records()) == [], bounty.output()


def nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


def test_the_bounty_bounds_metadata_and_its_listing_stays_readable(bounty) -> None:
    submission = '{"project_id": "p1", "github_url": "https://github.com/a/b", "miner_hotkey": "5M", "metadata": %s}'
    with bounty.client() as client:
        for metadata, reason in [(nested(256), "nested deeper than 8"), ('{"a": "%s"}' % ("x" * 20000), "larger than")]:
            response = post_raw(client, "/submissions", submission % metadata)
            assert response.status_code == 422, response.text
            assert reason in invalid_fields(response.json(), ["body", "metadata"])
        assert post_raw(client, "/submissions", submission % nested(8)).status_code == 200
        listing = client.get("/submissions")
        assert listing.status_code == 200 and len(listing.json()) == 1


def test_the_runner_bounds_nesting_for_every_challenge(sites: dict[str, Path], tmp_path: Path, server) -> None:
    served = server(
        ["--data-dir", str(tmp_path)],
        [sites["bounty"]],
        CHALLENGE_OWNER_TOKEN="owner-token",
        CHALLENGE_MAX_JSON_DEPTH="4",
    )
    project = '{"project_id": "p1", "title": "P", "description": "d", "metadata": %s}'
    with served.client() as client:
        # Within the bounty's own bound of 8, past the runner's 4: the project counts as one level.
        response = post_raw(client, "/admin/projects", project % nested(4), **OWNER)
        assert response.status_code == 422, response.text
        assert "CHALLENGE_MAX_JSON_DEPTH" in invalid_fields(response.json(), ["body", "metadata", "a", "a", "a"])
        assert post_raw(client, "/admin/projects", project % nested(3), **OWNER).status_code == 200


def test_a_stored_value_that_cannot_be_answered_is_a_clean_500(bounty, tmp_path: Path) -> None:
    # A row as a runner without these bounds stored it: more levels than pydantic serializes.
    with bounty.client() as client:
        good = '{"project_id": "p1", "github_url": "https://github.com/a/b", "miner_hotkey": "5M"}'
        assert post_raw(client, "/submissions", good).status_code == 200
    with closing(sqlite3.connect(tmp_path / "challenge.sqlite3")) as db, db:
        db.execute("UPDATE bounty_submissions SET metadata = ?", (nested(300),))
    with bounty.client() as client:
        listing = client.get("/submissions")
        assert listing.status_code == 500
        assert ErrorResponse.model_validate(listing.json()).code == "internal_error"
        assert client.get("/projects").status_code == 200
    (raised,) = logged(bounty.records(), "GET /submissions raised", "ERROR")
    # The operator finds the fault from the id the client got.
    assert raised["correlation_id"] == listing.headers["x-request-id"]
    assert "Maximum serialization depth exceeded" in raised["exception"]


def test_unprintable_hotkeys_never_reach_the_weights(example) -> None:
    with example.client() as client:
        for hotkey in ("5Good", "5Nul\u0000", "5Line\nBreak", "5Esc\u001b[31m", "5Del\u007f"):
            assert client.post("/submissions", json={"hotkey": hotkey, "score": 5}).status_code == 201
        weights = client.get(
            "/internal/v1/get_weights", headers={"Authorization": f"Bearer {TOKEN}", "X-Base-Challenge-Slug": "example"}
        )
    assert weights.json()["weights"] == {"5Good": 5.0}
    assert weights.json()["metadata"]["dropped"] == "4"
    records = example.records()
    # Compare messages, where the backslash is not escaped again as in the JSON line.
    (nul,) = logged(records, "dropped weight for hotkey '5Nul\\x00': hotkey contains the unprintable character U+0000")
    assert nul["level"] == "WARNING"
    for code in ("U+000A", "U+001B", "U+007F"):
        assert len(logged(records, f"the unprintable character {code}", "WARNING")) == 1, code
