"""Challenge settings: CHALLENGE_* variables, secrets from <NAME>_FILE read on every use and never shown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import run_cli
from wire_schemas import without_id

from base_runner import AuthFailure, ChallengeSettings, Secret
from base_runner._core.errors import ConfigError


class Settings(ChallengeSettings):
    api_key: Secret | None = None
    rounds: int = 3


def test_fields_read_challenge_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHALLENGE_ROUNDS", "7")
    monkeypatch.setenv("CHALLENGE_UNRELATED", "ignored")
    settings = Settings()
    assert settings.rounds == 7
    assert settings.api_key is None and settings.owner_token is None


def test_secret_from_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHALLENGE_API_KEY", "key-from-variable")
    assert Settings().api_key.get_secret_value() == "key-from-variable"


def test_secret_file_is_read_on_every_use(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key_file = tmp_path / "api_key"
    key_file.write_text("first-key\n")
    monkeypatch.setenv("CHALLENGE_API_KEY_FILE", str(key_file))
    settings = Settings()
    assert settings.api_key.file == key_file
    assert settings.api_key.get_secret_value() == "first-key"
    key_file.write_text("rotated-key\n")
    assert settings.api_key.get_secret_value() == "rotated-key"
    key_file.unlink()
    assert settings.api_key.get_secret_value() is None


def test_every_secret_field_has_its_file_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "owner_token").write_text("owner")
    monkeypatch.setenv("CHALLENGE_OWNER_TOKEN_FILE", str(tmp_path / "owner_token"))
    assert Settings().owner_token.get_secret_value() == "owner"


def test_variable_wins_over_file_unless_empty(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "api_key").write_text("from-file")
    monkeypatch.setenv("CHALLENGE_API_KEY_FILE", str(tmp_path / "api_key"))
    monkeypatch.setenv("CHALLENGE_API_KEY", "from-variable")
    assert Settings().api_key.get_secret_value() == "from-variable"
    monkeypatch.setenv("CHALLENGE_API_KEY", "")
    assert Settings().api_key.get_secret_value() == "from-file"


def test_secret_never_shows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHALLENGE_API_KEY", "hunter2-api-key")
    (tmp_path / "owner_token").write_text("hunter2-owner")
    monkeypatch.setenv("CHALLENGE_OWNER_TOKEN_FILE", str(tmp_path / "owner_token"))
    settings = Settings()
    shown = [repr(settings), str(settings), f"{settings.api_key}", str(settings.model_dump())]
    for text in [*shown, settings.model_dump_json()]:
        assert "hunter2" not in text
    assert "Secret('**********')" in repr(settings)
    assert f"Secret(file={str(tmp_path / 'owner_token')!r})" in repr(settings)


def test_unreadable_secret_file_names_the_file_and_the_uid(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key_file = tmp_path / "api_key"
    key_file.mkdir()  # a folder where the file should be: read() fails as it would for a bad mode
    monkeypatch.setenv("CHALLENGE_API_KEY_FILE", str(key_file))
    with pytest.raises(AuthFailure) as failure:
        Settings().api_key.get_secret_value()
    assert str(failure.value) == f"cannot read the secret file {key_file} as uid {os.getuid()}: Is a directory"
    assert failure.value.status_code == 503


def test_invalid_value_is_one_line_naming_the_variable_never_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHALLENGE_ROUNDS", "hunter2")
    with pytest.raises(ConfigError) as error:
        Settings()
    assert str(error.value) == "CHALLENGE_ROUNDS: Input should be a valid integer, unable to parse string as an integer"
    with pytest.raises(ConfigError) as error:
        Settings(api_key=20240101)
    assert str(error.value) == "CHALLENGE_API_KEY: Value error, a secret must be a string"


def test_a_challenge_with_bad_settings_stops_with_exit_2(sites: dict[str, Path], tmp_path: Path) -> None:
    result = run_cli(
        "weights",
        "--challenge",
        "bounty",
        "--data-dir",
        str(tmp_path),
        sites=[sites["bounty"]],
        CHALLENGE_CLOSE_INTERVAL="0",
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "base-runner: error: challenge bounty (bounty-challenge 0.1.0): CHALLENGE_CLOSE_INTERVAL: "
        "Input should be greater than 0"
    )


def test_secrets_in_a_served_challenge(sites: dict[str, Path], tmp_path: Path, server) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    owner_file = secrets / "owner_token"
    owner_file.write_text("hunter2-owner-1\n")
    served = server(
        ["--challenge", "sdk", "--data-dir", str(tmp_path)],
        [sites["testbed"]],
        CHALLENGE_API_KEY="hunter2-api-key",
        CHALLENGE_OWNER_TOKEN_FILE=str(owner_file),
    )
    with served.client() as client:
        shown = client.get("/settings").json()
        assert shown["api_key_length"] == len("hunter2-api-key")
        owner_shown = f"Secret(file={str(owner_file)!r})"
        assert shown["dump"] == {"owner_token": owner_shown, "api_key": "**********", "rounds": 3}
        assert "hunter2" not in shown["repr"]

        def ping(token: str) -> int:
            return client.get("/owner/ping", headers={"X-Owner-Token": token}).status_code

        assert ping("hunter2-owner-1") == 200
        owner_file.write_text("hunter2-owner-2\n")
        assert (ping("hunter2-owner-1"), ping("hunter2-owner-2")) == (401, 200)
        owner_file.unlink()
        owner_file.mkdir()
        unreadable = client.get("/owner/ping", headers={"X-Owner-Token": "hunter2-owner-2"})
        assert unreadable.status_code == 503
        assert without_id(unreadable.json()) == {
            "code": "secret_unreadable",
            "detail": f"cannot read the secret file {owner_file} as uid {os.getuid()}: Is a directory",
        }
    assert served.stop() == 0
    output = served.output()
    assert "sdk settings: SdkSettings(" in output
    assert "hunter2" not in output
