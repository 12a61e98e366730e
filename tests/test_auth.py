"""The master's internal weights endpoint: every auth case, and a token file the master rotates."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

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
    assert response.json()["error"] == error
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
        response = await challenge_client.get(URL, headers={"Authorization": "Bearer x", "X-Base-Challenge-Slug": "example"})
        assert response.status_code == 503
        assert response.json()["error"] == "token_not_configured"
        assert str(token_file) in response.json()["detail"]

    async def test_rotation_is_seen_on_the_next_request(self, challenge_client: httpx.AsyncClient, token_file: Path) -> None:
        token_file.parent.mkdir()
        token_file.write_text("first-token\n")

        async def status(token: str) -> int:
            headers = {"Authorization": f"Bearer {token}", "X-Base-Challenge-Slug": "example"}
            return (await challenge_client.get(URL, headers=headers)).status_code

        assert await status("first-token") == 200
        token_file.write_text("second-token\n")
        assert await status("first-token") == 401
        assert await status("second-token") == 200

    async def test_unreadable_token_file_names_the_file(self, challenge_client: httpx.AsyncClient, token_file: Path) -> None:
        token_file.mkdir(parents=True)  # a folder where the file should be: read() fails as it would for a bad mode
        response = await challenge_client.get(URL, headers={"Authorization": "Bearer x", "X-Base-Challenge-Slug": "example"})
        assert response.status_code == 503
        assert response.json()["error"] == "token_unreadable"
        assert f"cannot read the token file {token_file} as uid" in response.json()["detail"]


class TestTokenFromVariableWinsOverFile:
    @pytest.fixture
    def challenge_settings(self, challenge_settings, tmp_path: Path):
        (tmp_path / "file_token").write_text("from-file")
        return challenge_settings.model_copy(update={"shared_token": SecretStr("from-env"), "shared_token_file": tmp_path / "file_token"})

    async def test_variable_wins(self, challenge_client: httpx.AsyncClient) -> None:
        ok = await challenge_client.get(URL, headers={"Authorization": "Bearer from-env", "X-Base-Challenge-Slug": "example"})
        assert ok.status_code == 200
        no = await challenge_client.get(URL, headers={"Authorization": "Bearer from-file", "X-Base-Challenge-Slug": "example"})
        assert no.status_code == 401
