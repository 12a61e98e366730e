"""Who may call: the master on its endpoints, the owner on owner routes, and the hotkey the master verified."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from conftest import run_cli
from pydantic import SecretStr
from wire_schemas import ErrorResponse, without_id

from base_runner import Secret
from base_runner.testing import MASTER_TOKEN

URL = "/internal/v1/get_weights"


async def test_master_gets_weights(master_client: httpx.AsyncClient) -> None:
    response = await master_client.get(URL)
    assert response.status_code == 200
    assert response.json()["challenge_slug"] == "example"


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ({"X-Base-Challenge-Slug": "example"}, 401, "missing_token"),
        ({"Authorization": "Basic abc", "X-Base-Challenge-Slug": "example"}, 401, "missing_token"),
        ({"Authorization": "Bearer wrong", "X-Base-Challenge-Slug": "example"}, 401, "invalid_token"),
        ({"Authorization": f"Bearer {MASTER_TOKEN}x", "X-Base-Challenge-Slug": "example"}, 401, "invalid_token"),
        ({"Authorization": f"Bearer {MASTER_TOKEN}"}, 400, "missing_slug"),
        ({"Authorization": f"Bearer {MASTER_TOKEN}", "X-Base-Challenge-Slug": "other"}, 400, "wrong_slug"),
    ],
)
async def test_refused(challenge_client: httpx.AsyncClient, headers: dict[str, str], status: int, error: str) -> None:
    response = await challenge_client.get(URL, headers=headers)
    assert response.status_code == status
    assert ErrorResponse.model_validate(response.json()).code == error
    assert MASTER_TOKEN not in response.text


async def test_older_slug_header_is_accepted(challenge_client: httpx.AsyncClient) -> None:
    headers = {"Authorization": f"Bearer {MASTER_TOKEN}", "X-Platform-Challenge-Slug": "example"}
    assert (await challenge_client.get(URL, headers=headers)).status_code == 200


class TestTokenFile:
    @pytest.fixture
    def token_file(self, tmp_path: Path) -> Path:
        return tmp_path / "secrets" / "challenge_token"

    @pytest.fixture
    def challenge_settings(self, challenge_settings, token_file: Path):
        return challenge_settings.model_copy(update={"shared_token": None, "shared_token_file": token_file})

    async def test_no_token_configured_is_503(self, challenge_client: httpx.AsyncClient, token_file: Path) -> None:
        response = await challenge_client.get(
            URL, headers={"Authorization": "Bearer x", "X-Base-Challenge-Slug": "example"}
        )
        assert response.status_code == 503
        assert ErrorResponse.model_validate(response.json()).code == "token_not_configured"
        assert str(token_file) in response.json()["detail"]

    async def test_rotation_is_seen_on_the_next_request(
        self, challenge_client: httpx.AsyncClient, token_file: Path
    ) -> None:
        token_file.parent.mkdir()
        token_file.write_text("first-token\n")

        async def status(token: str) -> int:
            headers = {"Authorization": f"Bearer {token}", "X-Base-Challenge-Slug": "example"}
            return (await challenge_client.get(URL, headers=headers)).status_code

        assert await status("first-token") == 200
        token_file.write_text("second-token\n")
        assert await status("first-token") == 401
        assert await status("second-token") == 200

    async def test_unreadable_token_file_names_the_file(
        self, challenge_client: httpx.AsyncClient, token_file: Path
    ) -> None:
        token_file.mkdir(parents=True)  # a folder where the file should be: read() fails as it would for a bad mode
        response = await challenge_client.get(
            URL, headers={"Authorization": "Bearer x", "X-Base-Challenge-Slug": "example"}
        )
        assert response.status_code == 503
        assert ErrorResponse.model_validate(response.json()).code == "token_unreadable"
        assert f"cannot read the token file {token_file} as uid" in response.json()["detail"]


class TestTokenFromVariableWinsOverFile:
    @pytest.fixture
    def challenge_settings(self, challenge_settings, tmp_path: Path):
        (tmp_path / "file_token").write_text("from-file")
        return challenge_settings.model_copy(
            update={"shared_token": SecretStr("from-env"), "shared_token_file": tmp_path / "file_token"}
        )

    async def test_variable_wins(self, challenge_client: httpx.AsyncClient) -> None:
        ok = await challenge_client.get(
            URL, headers={"Authorization": "Bearer from-env", "X-Base-Challenge-Slug": "example"}
        )
        assert ok.status_code == 200
        no = await challenge_client.get(
            URL, headers={"Authorization": "Bearer from-file", "X-Base-Challenge-Slug": "example"}
        )
        assert no.status_code == 401


class TestOwnerAuth:
    """``OwnerAuth`` on the testbed's ``sdk`` challenge, whose ``/owner/ping`` depends on it."""

    @pytest.fixture
    def challenge_slug(self) -> str:
        return "sdk"

    @pytest.fixture
    def sdk_settings(self, challenge_app):
        import runner_testbed.sdk

        return runner_testbed.sdk.settings

    @pytest.fixture
    def owner_token(self, sdk_settings, monkeypatch: pytest.MonkeyPatch) -> str:
        monkeypatch.setattr(sdk_settings, "owner_token", Secret("the-owner-token"))
        return "the-owner-token"

    async def test_no_owner_token_configured_is_503(self, challenge_client: httpx.AsyncClient, sdk_settings) -> None:
        assert sdk_settings.owner_token is None
        response = await challenge_client.get("/owner/ping", headers={"X-Owner-Token": "anything"})
        assert response.status_code == 503
        assert without_id(response.json()) == {
            "code": "owner_token_not_configured",
            "detail": "no owner token is configured: set CHALLENGE_OWNER_TOKEN or CHALLENGE_OWNER_TOKEN_FILE",
        }

    @pytest.mark.parametrize(
        ("headers", "error"),
        [
            ({}, "missing_owner_token"),
            ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing_owner_token"),
            ({"Authorization": "Bearer wrong"}, "invalid_owner_token"),
            ({"X-Owner-Token": "the-owner-tokenx"}, "invalid_owner_token"),
            # The bearer token, when there is one, is the one checked.
            ({"Authorization": "Bearer wrong", "X-Owner-Token": "the-owner-token"}, "invalid_owner_token"),
            # The master's token is not the owner's.
            ({"Authorization": f"Bearer {MASTER_TOKEN}"}, "invalid_owner_token"),
        ],
    )
    async def test_refused(
        self, challenge_client: httpx.AsyncClient, owner_token: str, headers: dict[str, str], error: str
    ) -> None:
        response = await challenge_client.get("/owner/ping", headers=headers)
        assert response.status_code == 401
        assert ErrorResponse.model_validate(response.json()).code == error
        assert owner_token not in response.text

    async def test_a_router_guarded_where_it_is_included_refuses_before_the_body(
        self, challenge_client: httpx.AsyncClient, owner_token: str
    ) -> None:
        bad_json = {"Content-Type": "application/json", "X-Owner-Token": "wrong"}
        refused = await challenge_client.post("/owner/notes", headers=bad_json, content=b"{not json")
        assert (refused.status_code, refused.json()["code"]) == (401, "invalid_owner_token")
        owner = {"X-Owner-Token": owner_token}
        invalid = await challenge_client.post("/owner/notes", headers={**bad_json, **owner}, content=b"{not json")
        assert invalid.status_code == 422
        accepted = await challenge_client.post("/owner/notes", headers=owner, json={"text": "hi"})
        assert (accepted.status_code, accepted.json()) == (200, {"text": "hi"})

    @pytest.mark.parametrize(
        "headers",
        [
            {"Authorization": "Bearer the-owner-token"},
            {"Authorization": "bearer the-owner-token"},
            {"X-Owner-Token": "the-owner-token"},
            {"Authorization": "Basic dXNlcjpwYXNz", "X-Owner-Token": "the-owner-token"},
        ],
    )
    async def test_accepted(
        self, challenge_client: httpx.AsyncClient, owner_token: str, headers: dict[str, str]
    ) -> None:
        response = await challenge_client.get("/owner/ping", headers=headers)
        assert response.status_code == 200
        assert response.json() == {"owner": True}

    async def test_token_file_is_read_on_every_request(
        self, challenge_client: httpx.AsyncClient, sdk_settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        token_file = tmp_path / "owner_token"
        monkeypatch.setattr(sdk_settings, "owner_token", Secret(file=token_file))
        assert (await challenge_client.get("/owner/ping", headers={"X-Owner-Token": "x"})).status_code == 503
        token_file.write_text("first\n")
        assert (await challenge_client.get("/owner/ping", headers={"X-Owner-Token": "first"})).status_code == 200
        token_file.write_text("second\n")
        assert (await challenge_client.get("/owner/ping", headers={"X-Owner-Token": "first"})).status_code == 401
        assert (await challenge_client.get("/owner/ping", headers={"X-Owner-Token": "second"})).status_code == 200


BRIDGE = "/internal/v1/bridge/submissions"


class TestVerifiedHotkey:
    """``verified_hotkey`` on the testbed's ``sdk`` challenge, whose bridge route echoes it."""

    BODY = b'{"project_id": "p", "github_url": "https://github.com/m/w"}'

    @pytest.fixture
    def challenge_slug(self) -> str:
        return "sdk"

    def verified(self, body: bytes = BODY, prefix: str = "X-Base") -> dict[str, str]:
        return {
            f"{prefix}-Verified-Hotkey": "5Miner",
            f"{prefix}-Verified-Uid": "7",
            f"{prefix}-Verified-Nonce": "nonce-1",
            f"{prefix}-Request-Hash": hashlib.sha256(body).hexdigest(),
        }

    @pytest.mark.parametrize("prefix", ["X-Base", "X-Platform"])
    async def test_the_master_bridges_a_verified_hotkey(self, master_client: httpx.AsyncClient, prefix: str) -> None:
        response = await master_client.post(BRIDGE, content=self.BODY, headers=self.verified(prefix=prefix))
        assert response.status_code == 200
        assert response.json() == {
            "hotkey": "5Miner",
            "uid": 7,
            "nonce": "nonce-1",
            "request_hash": hashlib.sha256(self.BODY).hexdigest(),
        }

    async def test_only_the_hotkey_is_required(self, master_client: httpx.AsyncClient) -> None:
        response = await master_client.post(BRIDGE, content=b"{}", headers={"X-Base-Verified-Hotkey": "5Miner"})
        assert response.json() == {"hotkey": "5Miner", "uid": None, "nonce": None, "request_hash": None}

    @pytest.mark.parametrize(
        ("auth", "status", "error"),
        [
            ({}, 401, "missing_token"),
            ({"Authorization": "Bearer forged"}, 401, "invalid_token"),
            ({"Authorization": f"Bearer {MASTER_TOKEN}"}, 400, "missing_slug"),
            ({"Authorization": f"Bearer {MASTER_TOKEN}", "X-Base-Challenge-Slug": "other"}, 400, "wrong_slug"),
        ],
    )
    async def test_identity_headers_without_the_master_are_refused(
        self, challenge_client: httpx.AsyncClient, auth: dict[str, str], status: int, error: str
    ) -> None:
        response = await challenge_client.post(BRIDGE, content=self.BODY, headers={**self.verified(), **auth})
        assert response.status_code == status
        assert ErrorResponse.model_validate(response.json()).code == error

    @pytest.mark.parametrize(
        ("change", "error"),
        [
            ({"X-Base-Verified-Hotkey": ""}, "missing_verified_hotkey"),
            ({"X-Base-Verified-Hotkey": "5" * 129}, "invalid_verified_hotkey"),
            ({"X-Base-Verified-Uid": "seven"}, "invalid_verified_uid"),
            ({"X-Base-Verified-Uid": "-1"}, "invalid_verified_uid"),
            ({"X-Base-Request-Hash": hashlib.sha256(b"another body").hexdigest()}, "request_hash_mismatch"),
        ],
    )
    async def test_bad_identity_is_400(
        self, master_client: httpx.AsyncClient, change: dict[str, str], error: str
    ) -> None:
        response = await master_client.post(BRIDGE, content=self.BODY, headers={**self.verified(), **change})
        assert response.status_code == 400
        assert ErrorResponse.model_validate(response.json()).code == error


def test_a_bridge_route_must_depend_on_verified_hotkey(sites: dict[str, Path], tmp_path: Path) -> None:
    result = run_cli(
        "serve", "--challenge", "unguarded-bridge", "--data-dir", str(tmp_path), "--port", "0", sites=[sites["testbed"]]
    )
    assert result.returncode == 3
    assert result.stderr.strip() == (
        "base-runner: error: challenge unguarded-bridge (runner-testbed 2.5.0): the route "
        "/internal/v1/bridge/submissions does not depend on base_runner.verified_hotkey; routes under "
        "/internal/v1/bridge/ must, so that only the master reaches them"
    )
