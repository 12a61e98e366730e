"""pytest fixtures for challenge authors, registered through the ``pytest11`` entry point.

Installing base-runner is enough: in a challenge's tests, ask for a fixture
by name. Nothing here runs unless a test asks for it. The fixtures run on
anyio's pytest plugin (shipped with anyio, which FastAPI depends on); tests
that use them are marked for it automatically, so write them as plain
``async def`` tests.

Fixtures:

``challenge_slug``
    Which installed challenge to test: override it in your ``conftest.py``
    to pick one; by default ``BASE_CHALLENGE_SLUG``, else the only one.
``challenge_data_dir``
    A fresh, empty data dir (``tmp_path / "data"``).
``challenge_settings``
    The runner's settings on that data dir, with :data:`MASTER_TOKEN` as
    the master's token.
``challenge_app``
    The challenge's FastAPI app, started (tables created, ``lifespan``
    entered) and stopped around the test.
``challenge_client``
    An ``httpx.AsyncClient`` on that app.
``challenge_session``
    An ``AsyncSession`` on the same database (``database.session()``).
``master_client``
    An ``httpx.AsyncClient`` that calls the app as the BASE master does:
    bearer token and slug header on every request.

Helper: :func:`assert_valid_weights`.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import SecretStr

if TYPE_CHECKING:
    import httpx
    from fastapi import FastAPI
    from sqlalchemy.ext.asyncio import AsyncSession

    from .settings import RunnerSettings

#: The master token the fixtures configure and ``master_client`` sends.
MASTER_TOKEN = "test-master-token"

_ASYNC_FIXTURES = frozenset({"challenge_app", "challenge_client", "challenge_session", "master_client"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests that use the async fixtures on anyio's plugin; leave the rest alone."""
    for item in items:
        if _ASYNC_FIXTURES.intersection(getattr(item, "fixturenames", ())) and not item.get_closest_marker("anyio"):
            item.add_marker(pytest.mark.anyio)


@pytest.fixture
def challenge_slug() -> str | None:
    """The challenge to test; ``None`` picks as ``serve`` does."""
    return None


@pytest.fixture
def challenge_data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    return data


@pytest.fixture
def challenge_settings(challenge_data_dir: Path, tmp_path: Path) -> RunnerSettings:
    from .settings import RunnerSettings

    return RunnerSettings(
        data_dir=challenge_data_dir,
        database_url=None,
        shared_token=SecretStr(MASTER_TOKEN),
        shared_token_file=tmp_path / "no-token-file",
    )


@pytest.fixture
async def challenge_app(
    anyio_backend: str, challenge_slug: str | None, challenge_settings: RunnerSettings
) -> AsyncIterator[FastAPI]:
    from .app import bind, create_app
    from .plugins import load, select

    loaded = load(select(challenge_slug))
    bind(challenge_settings)
    app = create_app(loaded, challenge_settings)
    async with app.router.lifespan_context(app):
        yield app


def _client(app: FastAPI, headers: Mapping[str, str] | None = None) -> httpx.AsyncClient:
    import httpx

    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://challenge", headers=dict(headers or {})
    )


@pytest.fixture
async def challenge_client(challenge_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(challenge_app) as client:
        yield client


@pytest.fixture
async def master_client(challenge_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    headers = {
        "Authorization": f"Bearer {MASTER_TOKEN}",
        "X-Base-Challenge-Slug": challenge_app.state.challenge.name,
    }
    async with _client(challenge_app, headers) as client:
        yield client


@pytest.fixture
async def challenge_session(challenge_app: FastAPI) -> AsyncIterator[AsyncSession]:
    from .db import database

    async with database.session() as session:
        yield session


def assert_valid_weights(weights: Any) -> dict[str, float]:
    """Assert ``weights`` is a map the master accepts; return it.

    Accepts the map itself or a whole weights response body (with a
    ``weights`` key): keys non-empty strings of at most 128 characters,
    values real numbers (not ``bool``), finite and ``>= 0``.
    """
    if isinstance(weights, Mapping) and "weights" in weights and "challenge_slug" in weights:
        weights = weights["weights"]
    assert isinstance(weights, Mapping), f"weights must be a dict, got {type(weights).__name__}"
    for hotkey, value in weights.items():
        assert isinstance(hotkey, str) and 0 < len(hotkey) <= 128, f"bad hotkey {hotkey!r}"
        assert isinstance(value, int | float) and not isinstance(value, bool), f"{hotkey}: {value!r} is not a number"
        assert math.isfinite(value) and value >= 0, f"{hotkey}: {value!r} is not finite and >= 0"
    return dict(weights)
