"""The bounty challenge, ported from PlatformNetwork/bounty-challenge, through the runner.

The first tests are the original's scenarios, rewritten on the runner's
fixtures; the rest cover what the original left untested, the closing
worker and the bridge route.
"""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path

import anyio
import httpx
import pytest
from conftest import logged
from fastapi import FastAPI
from sqlalchemy import text
from wire_schemas import HealthResponse, without_id

from base_runner import database
from base_runner.testing import assert_valid_weights

OWNER = {"Authorization": "Bearer owner-token"}
WORK = {"project_id": "cli-ui", "miner_hotkey": "hotkey-a", "github_url": "https://github.com/miner/work"}


@pytest.fixture
def challenge_slug() -> str:
    return "bounty"


@pytest.fixture(autouse=True)
def bounty_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The plugin reads its settings when it is first imported, in the first test
    # here that starts it: every test sets the same values.
    monkeypatch.setenv("CHALLENGE_OWNER_TOKEN", "owner-token")
    monkeypatch.setenv("CHALLENGE_CLOSE_INTERVAL", "0.05")
    # Another test module may have imported it first, with other values: set them on the object too.
    from bounty_challenge.settings import settings

    from base_runner import Secret

    monkeypatch.setattr(settings, "owner_token", Secret("owner-token"))
    monkeypatch.setattr(settings, "close_interval", 0.05)


async def create_project(client: httpx.AsyncClient, project_id: str = "cli-ui", **fields: object) -> httpx.Response:
    body = {"project_id": project_id, "title": "Best CLI UI/UX", "description": "Improve CLI UX", **fields}
    response = await client.post("/admin/projects", headers=OWNER, json=body)
    assert response.status_code == 200, response.text
    return response


async def submit(client: httpx.AsyncClient, **fields: object) -> httpx.Response:
    return await client.post("/submissions", json={**WORK, **fields})


async def bridge(master: httpx.AsyncClient, hotkey: str = "hotkey-a", **fields: object) -> httpx.Response:
    """A submission the master bridged, with the hotkey whose signature it verified."""
    work = {key: value for key, value in {**WORK, **fields}.items() if key != "miner_hotkey"}
    return await master.post("/internal/v1/bridge/submissions", json=work, headers={"X-Base-Verified-Hotkey": hotkey})


async def eventually(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"{what} did not happen in {seconds} s"
        await anyio.sleep(0.05)


# The original's scenarios.


async def test_owner_reviews_submission_and_rewards_it(
    challenge_client: httpx.AsyncClient, master_client: httpx.AsyncClient
) -> None:
    await create_project(challenge_client)
    # Through the master, as a hotkey must come to be rewarded (the original took the body's claim).
    submission = await bridge(master_client)
    assert submission.status_code == 200
    submission_id = submission.json()["id"]

    review = await challenge_client.post(
        "/admin/reviews",
        headers=OWNER,
        json={"submission_id": submission_id, "score": 94, "status": "accepted", "comments": "Best UX."},
    )
    assert review.status_code == 200
    assert review.json()["score"] == 94

    reward = await challenge_client.post(
        f"/admin/submissions/{submission_id}/reward",
        headers=OWNER,
        json={"weight": 2.5, "reason": "winner", "updated_by": "sudo-owner"},
    )
    assert reward.status_code == 200
    assert reward.json()["hotkey"] == "hotkey-a" and reward.json()["weight"] == 2.5

    weights = await master_client.get("/internal/v1/get_weights")
    assert weights.status_code == 200
    assert assert_valid_weights(weights.json()) == {"hotkey-a": 2.5}

    leaderboard = await challenge_client.get("/leaderboard")
    assert leaderboard.status_code == 200
    assert leaderboard.json()[0]["reason"] == "winner"
    rewarded = (await challenge_client.get(f"/submissions/{submission_id}")).json()
    assert (rewarded["status"], rewarded["review_score"]) == ("rewarded", 94.0)


async def test_owner_can_replace_manual_emissions(
    challenge_client: httpx.AsyncClient, master_client: httpx.AsyncClient
) -> None:
    response = await challenge_client.post(
        "/admin/emissions",
        headers=OWNER,
        json={
            "replace": True,
            "updated_by": "sudo-owner",
            "emissions": [
                {"hotkey": "hotkey-a", "weight": 1.0, "reason": "first"},
                {"hotkey": "hotkey-b", "weight": 0.5, "reason": "second"},
            ],
        },
    )
    assert response.status_code == 200
    assert [item["hotkey"] for item in response.json()] == ["hotkey-a", "hotkey-b"]

    response = await challenge_client.post(
        "/admin/emissions", headers=OWNER, json={"replace": True, "emissions": [{"hotkey": "hotkey-c", "weight": 3.0}]}
    )
    assert response.status_code == 200

    weights = await master_client.get("/internal/v1/get_weights")
    assert weights.json()["weights"] == {"hotkey-c": 3.0}


@pytest.mark.parametrize("weight", ["-1.0", "NaN", "Infinity", '"heavy"'])
async def test_emission_validation_rejects_bad_weights(challenge_client: httpx.AsyncClient, weight: str) -> None:
    # Sent as raw JSON: Python's parser takes NaN and Infinity literals.
    body = f'{{"emissions": [{{"hotkey": "hotkey-a", "weight": {weight}}}]}}'
    response = await challenge_client.post(
        "/admin/emissions", headers={**OWNER, "Content-Type": "application/json"}, content=body
    )
    assert response.status_code == 422
    assert (await challenge_client.get("/admin/emissions", headers=OWNER)).json() == []


@pytest.mark.parametrize("headers", [{"Authorization": "Bearer wrong"}, {"X-Owner-Token": "wrong"}, {}])
async def test_owner_token_required(challenge_client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await challenge_client.post(
        "/admin/emissions", headers=headers, json={"emissions": [{"hotkey": "hotkey-a", "weight": 1.0}]}
    )
    assert response.status_code == 401
    assert (await challenge_client.get("/leaderboard")).json() == []


async def test_an_overridden_owner_auth_lets_the_body_through(
    challenge_app: FastAPI, challenge_client: httpx.AsyncClient
) -> None:
    from bounty_challenge.routes import admin

    (owner,) = [dependency.dependency for dependency in admin.dependencies]
    # As a challenge's own tests replace it; the check before the body honours the override too.
    challenge_app.dependency_overrides[owner] = lambda: None
    project = {"project_id": "cli-ui", "title": "T", "description": "D"}
    assert (await challenge_client.post("/admin/projects", json=project)).status_code == 200
    assert (await challenge_client.post("/admin/emissions", json={"emissions": 1})).status_code == 422
    del challenge_app.dependency_overrides[owner]
    refused = await challenge_client.post("/admin/projects", json=project)
    assert (refused.status_code, refused.json()["code"]) == (401, "missing_owner_token")


async def test_project_deadline_blocks_late_submission(challenge_client: httpx.AsyncClient) -> None:
    project = await create_project(challenge_client, "closed", title="Closed", deadline_at="2000-01-01T00:00:00Z")
    assert project.json()["deadline_at"] == "2000-01-01T00:00:00Z"
    response = await submit(challenge_client, project_id="closed")
    assert response.status_code == 400
    assert "deadline" in response.text


async def test_admin_creates_project_and_miner_submits_github_work(challenge_client: httpx.AsyncClient) -> None:
    unauthorized = await challenge_client.post(
        "/admin/projects", json={"project_id": "cli-ui", "title": "Best CLI UI/UX", "description": "Improve the CLI"}
    )
    assert unauthorized.status_code == 401

    project = await create_project(
        challenge_client,
        goals="Make the CLI clearer, faster, and more pleasant to use.",
        repository_url="https://github.com/PlatformNetwork/example-cli",
        metadata={"rubric": ["visual", "flow", "accessibility"]},
    )
    assert project.json()["project_id"] == "cli-ui"

    projects = await challenge_client.get("/projects")
    assert projects.status_code == 200
    assert projects.json()[0]["metadata"]["rubric"] == ["visual", "flow", "accessibility"]

    polished = {"name": "polished-cli", "github_url": "https://github.com/miner/polished-cli", "branch": "main"}
    submission = await submit(challenge_client, **polished, description="New navigation and theme.")
    assert submission.status_code == 200
    payload = submission.json()
    assert (payload["project_id"], payload["miner_hotkey"], payload["status"]) == ("cli-ui", "hotkey-a", "submitted")

    # The same project, hotkey, URL, branch and commit: the same submission, whatever the description.
    duplicate = await submit(challenge_client, **polished)
    assert duplicate.status_code == 409
    assert len((await challenge_client.get("/submissions")).json()) == 1


async def test_submission_rejects_non_github_url(challenge_client: httpx.AsyncClient) -> None:
    await create_project(challenge_client)
    for url in ("https://gitlab.com/miner/work", "http://github.com/miner/work", "https://github.com.evil/x"):
        assert (await submit(challenge_client, github_url=url)).status_code == 422


async def test_health_version_and_internal_auth(challenge_client: httpx.AsyncClient) -> None:
    health = HealthResponse.model_validate((await challenge_client.get("/health")).json())
    assert (health.status, health.slug, health.version) == ("ok", "bounty", "0.1.0")
    version = (await challenge_client.get("/version")).json()
    assert version["challenge_version"] == "0.1.0" and "get_weights" in version["capabilities"]
    assert (await challenge_client.get("/internal/v1/get_weights")).status_code == 401
    bad_slug = {"Authorization": "Bearer test-master-token", "X-Platform-Challenge-Slug": "other"}
    assert (await challenge_client.get("/internal/v1/get_weights", headers=bad_slug)).status_code == 400


# What the original left untested.


async def test_not_found(challenge_client: httpx.AsyncClient) -> None:
    assert without_id((await challenge_client.get("/projects/nope")).json()) == {
        "code": "not_found",
        "detail": "project not found",
    }
    assert (await submit(challenge_client, project_id="nope")).status_code == 404
    assert without_id((await challenge_client.get("/submissions/99")).json()) == {
        "code": "not_found",
        "detail": "submission not found",
    }
    review = {"submission_id": 99, "score": 1}
    assert (await challenge_client.post("/admin/reviews", headers=OWNER, json=review)).status_code == 404
    reward = await challenge_client.post("/admin/submissions/99/reward", headers=OWNER, json={"weight": 1})
    assert reward.status_code == 404


async def test_paused_project_takes_no_submission(challenge_client: httpx.AsyncClient) -> None:
    await create_project(challenge_client, status="paused")
    response = await submit(challenge_client)
    assert (response.status_code, without_id(response.json())) == (
        400,
        {"code": "bad_request", "detail": "project is not active"},
    )
    bad = {"project_id": "cli-ui", "title": "T", "description": "D", "status": "archived"}
    assert (await challenge_client.post("/admin/projects", headers=OWNER, json=bad)).status_code == 422


async def test_upsert_updates_the_project(challenge_client: httpx.AsyncClient) -> None:
    first = (await create_project(challenge_client)).json()
    second = (await create_project(challenge_client, title="Renamed", status="paused")).json()
    assert second["id"] == first["id"] and second["created_at"] == first["created_at"]
    assert (second["title"], second["status"]) == ("Renamed", "paused")
    assert len((await challenge_client.get("/projects")).json()) == 1


async def test_submissions_listed_newest_first_and_by_project(challenge_client: httpx.AsyncClient) -> None:
    await create_project(challenge_client)
    await create_project(challenge_client, "other")
    for n in range(3):
        assert (await submit(challenge_client, github_url=f"https://github.com/miner/work-{n}")).status_code == 200
    await submit(challenge_client, project_id="other")
    listed = (await challenge_client.get("/submissions")).json()
    assert [s["project_id"] for s in listed] == ["other", "cli-ui", "cli-ui", "cli-ui"]
    by_project = (await challenge_client.get("/submissions", params={"project_id": "cli-ui"})).json()
    assert [s["github_url"] for s in by_project] == [f"https://github.com/miner/work-{n}" for n in (2, 1, 0)]
    assert (await challenge_client.get("/submissions", params={"project_id": "nope"})).json() == []


async def test_empty_emissions_are_refused(challenge_client: httpx.AsyncClient) -> None:
    response = await challenge_client.post("/admin/emissions", headers=OWNER, json={"emissions": []})
    assert (response.status_code, without_id(response.json())) == (
        400,
        {"code": "bad_request", "detail": "emissions cannot be empty"},
    )


async def test_weights_are_the_emissions_above_zero(
    challenge_client: httpx.AsyncClient, master_client: httpx.AsyncClient
) -> None:
    emissions = [{"hotkey": "zero", "weight": 0}, {"hotkey": "some", "weight": 0.25}, {"hotkey": "some", "weight": 4}]
    response = await challenge_client.post("/admin/emissions", headers=OWNER, json={"emissions": emissions})
    # The last entry for a hotkey wins.
    assert [(e["hotkey"], e["weight"]) for e in response.json()] == [("some", 4.0)]
    assert (await master_client.get("/internal/v1/get_weights")).json()["weights"] == {"some": 4.0}


async def test_bridged_submission_takes_the_verified_hotkey(master_client: httpx.AsyncClient, challenge_client) -> None:
    await create_project(challenge_client)
    body = b'{"project_id": "cli-ui", "miner_hotkey": "spoofed", "github_url": "https://github.com/miner/work"}'
    headers = {
        "X-Base-Verified-Hotkey": "5Verified",
        "X-Base-Request-Hash": hashlib.sha256(body).hexdigest(),
        "Content-Type": "application/json",
    }
    response = await master_client.post("/internal/v1/bridge/submissions", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["miner_hotkey"] == "5Verified"
    forged = await challenge_client.post("/internal/v1/bridge/submissions", content=body, headers=headers)
    assert forged.status_code == 401


async def test_a_claimed_hotkey_is_marked_and_never_rewarded(
    challenge_client: httpx.AsyncClient, master_client: httpx.AsyncClient
) -> None:
    await create_project(challenge_client)
    claimed = await submit(challenge_client, miner_hotkey="5Victim")
    assert claimed.status_code == 200 and claimed.json()["hotkey_verified"] is False
    reward = await challenge_client.post(
        f"/admin/submissions/{claimed.json()['id']}/reward", headers=OWNER, json={"weight": 1}
    )
    assert reward.status_code == 409 and "claimed, not verified" in reward.json()["detail"]
    assert (await master_client.get("/internal/v1/get_weights")).json()["weights"] == {}
    # The claim does not take the hash of the miner's own submission of the same work.
    verified = await bridge(master_client, hotkey="5Victim")
    assert verified.status_code == 200 and verified.json()["hotkey_verified"] is True
    reward = await challenge_client.post(
        f"/admin/submissions/{verified.json()['id']}/reward", headers=OWNER, json={"weight": 1}
    )
    assert reward.status_code == 200
    assert (await master_client.get("/internal/v1/get_weights")).json()["weights"] == {"5Victim": 1.0}


async def test_worker_completes_projects_past_their_deadline(challenge_client: httpx.AsyncClient) -> None:
    await create_project(challenge_client, "late", deadline_at="2000-01-01T00:00:00")
    await create_project(challenge_client, "open", deadline_at="2999-01-01T00:00:00+02:00")

    async def completed() -> bool:
        return (await challenge_client.get("/projects/late")).json()["status"] == "completed"

    await eventually(completed, "completing the late project")
    still_open = (await challenge_client.get("/projects/open")).json()
    assert (still_open["status"], still_open["deadline_at"]) == ("active", "2998-12-31T22:00:00Z")
    assert without_id((await submit(challenge_client, project_id="late")).json()) == {
        "code": "bad_request",
        "detail": "project deadline has passed",
    }


async def test_dead_worker_makes_the_challenge_not_ready(
    challenge_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    assert (await challenge_client.get("/ready")).status_code == 200
    async with database.session() as session:
        await session.execute(text("DROP TABLE bounty_projects"))
        await session.commit()

    async def not_ready() -> bool:
        return (await challenge_client.get("/ready")).status_code == 503

    await eventually(not_ready, "the worker's death")
    ready = HealthResponse.model_validate((await challenge_client.get("/ready")).json())
    assert [c.name for c in ready.checks if c.status != "ok"] == ["workers"]
    health = await challenge_client.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "unhealthy"
    (line,) = [r.getMessage() for r in caplog.records if "stopping so the process is restarted" in r.getMessage()]
    assert "worker close-expired-projects crashed: OperationalError: " in line
    assert "no such table: bounty_projects" in line


# Through a real runner process.


def test_bounty_served_by_the_runner(sites: dict[str, Path], tmp_path: Path, server) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "challenge_token").write_text("master-token\n")
    (secrets / "owner_token").write_text("owner-secret\n")
    served = server(
        ["--challenge", "bounty", "--data-dir", str(tmp_path)],
        [sites["bounty"]],
        CHALLENGE_SHARED_TOKEN_FILE=str(secrets / "challenge_token"),
        CHALLENGE_OWNER_TOKEN_FILE=str(secrets / "owner_token"),
        CHALLENGE_CLOSE_INTERVAL="0.2",
    )
    owner = {"X-Owner-Token": "owner-secret"}  # the header that survives the master's public proxy
    project = {"project_id": "cli-ui", "title": "T", "description": "D"}
    with served.client() as client:
        assert client.get("/version").json()["challenge_version"] == "0.1.0"
        assert client.post("/admin/projects", headers=owner, json=project).status_code == 200
        late = {**project, "project_id": "late", "deadline_at": "2000-01-01T00:00:00Z"}
        assert client.post("/admin/projects", headers=owner, json=late).status_code == 200
        master = {"Authorization": "Bearer master-token", "X-Base-Challenge-Slug": "bounty"}
        bridged = {key: value for key, value in WORK.items() if key != "miner_hotkey"}
        submission = client.post(
            "/internal/v1/bridge/submissions", json=bridged, headers={**master, "X-Base-Verified-Hotkey": "hotkey-a"}
        ).json()
        reward = client.post(f"/admin/submissions/{submission['id']}/reward", headers=owner, json={"weight": 3})
        assert reward.status_code == 200
        weights = client.get(
            "/internal/v1/get_weights",
            headers={"Authorization": "Bearer master-token", "X-Base-Challenge-Slug": "bounty"},
        )
        assert weights.json()["weights"] == {"hotkey-a": 3.0}
        deadline = time.monotonic() + 15
        while client.get("/projects/late").json()["status"] != "completed":
            assert time.monotonic() < deadline, served.output()
            time.sleep(0.1)
    assert served.stop() == 0
    assert "owner-secret" not in served.output() and "master-token" not in served.output()


def raw_request(url: str, head: str, body: bytes = b"", timeout: float = 20) -> tuple[int, dict]:
    """Send ``head`` (lines ending in ``\\n``) and ``body`` as they are, on a connection of their own.

    For requests httpx will not send: a Content-Length whose body never comes.
    :returns: the status and the JSON body of the answer.
    """
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)

        def more() -> bytes:
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection before its whole answer"
            return chunk

        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += more()
        lines, _, content = answer.partition(b"\r\n\r\n")
        status_line, *header_lines = lines.decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in header_lines)
        while len(content) < int(headers["content-length"]):
            content += more()
    return int(status_line.split()[1]), json.loads(content)


def test_a_wrong_owner_token_is_refused_before_the_body_is_read(sites: dict[str, Path], tmp_path: Path, server) -> None:
    served = server(
        ["--challenge", "bounty", "--data-dir", str(tmp_path)],
        [sites["bounty"]],
        CHALLENGE_OWNER_TOKEN="owner-secret",
        # A body the server waits for answers 408 after this; the socket waits longer.
        CHALLENGE_BODY_TIMEOUT="4",
    )
    declared = 1024 * 1024  # the whole body cap, announced and never sent
    for token, code in (("X-Owner-Token: wrong\n", "invalid_owner_token"), ("", "missing_owner_token")):
        head = (
            f"POST /admin/projects HTTP/1.1\nHost: bounty\n{token}Content-Type: application/json\n"
            f"Content-Length: {declared}\n"
        )
        status, body = raw_request(served.url, head)
        assert (status, body["code"]) == (401, code), body
    # Not validated either: an invalid body with a wrong token is a 401, not a 422.
    with served.client() as client:
        invalid = client.post("/admin/emissions", headers={"X-Owner-Token": "wrong"}, json={"emissions": "nope"})
        assert (invalid.status_code, invalid.json()["code"]) == (401, "invalid_owner_token")
        assert invalid.headers["connection"] == "close"
        refused = client.post("/admin/emissions", headers={"X-Owner-Token": "owner-secret"}, json={"emissions": 1})
        assert refused.status_code == 422
        project = {"project_id": "cli-ui", "title": "T", "description": "D"}
        created = client.post("/admin/projects", headers={"X-Owner-Token": "owner-secret"}, json=project)
        assert created.status_code == 200, created.text
        # The routes that take no owner token still read their bodies as before.
        submission = client.post("/submissions", json={**WORK, "github_url": "https://example.com/x"})
        assert submission.status_code == 422
    # The right token, with its body sent in full: the body is read and the write done.
    second = json.dumps({**project, "project_id": "second"}).encode()
    status, body = raw_request(
        served.url,
        "POST /admin/projects HTTP/1.1\nHost: bounty\nX-Owner-Token: owner-secret\n"
        f"Content-Type: application/json\nContent-Length: {len(second)}\n",
        second,
    )
    assert (status, body["project_id"]) == (200, "second"), body
    assert served.stop() == 0
    assert "owner-secret" not in served.output()


def test_dead_worker_stops_the_bounty_process(sites: dict[str, Path], tmp_path: Path, server) -> None:
    served = server(
        ["--challenge", "bounty", "--data-dir", str(tmp_path)], [sites["bounty"]], CHALLENGE_CLOSE_INTERVAL="0.2"
    )
    with served.client() as client:
        assert client.get("/ready").status_code == 200
    # A database broken under the running service: the sweep cannot go on.
    with closing(sqlite3.connect(tmp_path / "challenge.sqlite3", timeout=10)) as conn:
        conn.execute("DROP TABLE bounty_projects")
    assert served.proc.wait(30) == 1
    output = served.output()
    crashes = logged(served.records(), "challenge bounty: worker close-expired-projects crashed", "ERROR")
    assert any("OperationalError" in r.get("exception", "") for r in crashes), output  # with its traceback
    assert (
        output.rstrip()
        .splitlines()[-1]
        .startswith("base-runner: error: challenge bounty: worker close-expired-projects crashed: OperationalError: ")
    )
