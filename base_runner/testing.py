"""pytest fixtures for challenge authors, registered through the ``pytest11`` entry point.

Installing ``base-runner[testing]`` is enough: in a challenge's tests, ask for
a fixture by name. Nothing here runs unless a test asks for it: there is no
autouse fixture, and only tests that use the async fixtures are marked for
anyio's pytest plugin (shipped with anyio, which FastAPI depends on), so
write them as plain ``async def`` tests.

Fixtures: ``challenge_slug`` (override it in your ``conftest.py``),
``challenge_data_dir``, ``challenge_settings``, ``challenge_env``, ``challenge_app``,
``challenge_client``, ``master_client``, ``owner_client``,
``bridge_client``, ``challenge_session``, ``challenge_owner_settings``,
``executor_recorder``, ``run_jobs``, ``job_state``; helper: :func:`assert_valid_weights`.
``docs/authoring.md`` documents each.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# Public here, for the type hints of a test that uses ``executor_recorder``; standard library only underneath.
from ._executor.recorder import ExecutorRecorder as ExecutorRecorder
from ._executor.recorder import RecordedRun as RecordedRun

if TYPE_CHECKING:
    import httpx
    from fastapi import FastAPI
    from sqlalchemy.ext.asyncio import AsyncSession

    from ._core.settings import RunnerSettings
    from .jobs import JobInfo

#: The master token the fixtures configure and ``master_client`` sends.
MASTER_TOKEN = "test-master-token"
#: The owner token ``owner_client`` sends and configures in the challenge's settings.
OWNER_TOKEN = "test-owner-token"
#: The miner hotkey ``bridge_client`` says the master verified, unless a request sends its own.
BRIDGED_HOTKEY = "5BridgedMinerHotkey"

_ASYNC_FIXTURES = frozenset(
    {
        "challenge_app",
        "challenge_client",
        "challenge_session",
        "master_client",
        "owner_client",
        "bridge_client",
        "run_jobs",
        "job_state",
    }
)


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
    """A fresh, empty data dir for the test: ``tmp_path / "data"``."""
    data = tmp_path / "data"
    data.mkdir()
    return data


@pytest.fixture
def challenge_settings(challenge_data_dir: Path, tmp_path: Path) -> RunnerSettings:
    """The runner's settings on ``challenge_data_dir``, with :data:`MASTER_TOKEN` as the master's token."""
    from pydantic import SecretStr

    from ._core.settings import RunnerSettings

    return RunnerSettings(
        data_dir=challenge_data_dir,
        database_url=None,
        shared_token=SecretStr(MASTER_TOKEN),
        shared_token_file=tmp_path / "no-token-file",
    )


@pytest.fixture
def challenge_env() -> dict[str, str]:
    """Environment variables the challenge's settings read before the app starts; none by default.

    Override it (in ``conftest.py``, a test module, or one test with
    ``@pytest.mark.parametrize("challenge_env", [{...}])``): ``challenge_app``
    sets them, then reads again every ``ChallengeSettings`` object held at module
    level in the challenge's package, before its ``lifespan`` (and the workers
    it starts) runs. Both are undone after the test.
    """
    return {}


def _package_settings(module: str) -> list[Any]:
    """Every ``ChallengeSettings`` object held at module level in the package of ``module``."""
    import sys

    from ._core.config import ChallengeSettings

    package = module.partition(".")[0].partition(":")[0]
    found: dict[int, Any] = {}
    for name, loaded in list(sys.modules.items()):
        if name == package or name.startswith(package + "."):
            for value in vars(loaded).values():
                if isinstance(value, ChallengeSettings):
                    found[id(value)] = value
    return list(found.values())


@pytest.fixture
async def challenge_app(
    anyio_backend: str,
    challenge_slug: str | None,
    challenge_settings: RunnerSettings,
    challenge_env: Mapping[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[FastAPI]:
    """The challenge's app on ``challenge_settings``: started (tables created, ``lifespan`` entered), stopped after.

    ``challenge_env`` is in the environment and the challenge's settings before it starts. Its jobs
    run only when the test calls :func:`run_jobs`, so a test sees each step in order.
    """
    from ._http.assembly import bind, build_runner
    from ._plugins.plugins import load, select

    for name, value in challenge_env.items():
        monkeypatch.setenv(name, value)
    loaded = load(select(challenge_slug))
    if challenge_env:
        # The package may have been imported by an earlier test, its settings read then.
        for settings in _package_settings(loaded.challenge.module):
            fresh = type(settings)()
            for field in type(settings).model_fields:
                monkeypatch.setattr(settings, field, getattr(fresh, field))
    bind(challenge_settings)
    runner = build_runner(loaded, challenge_settings)
    runner.jobs.autorun = False
    app = runner.app
    async with app.router.lifespan_context(app):
        yield app


def _client(app: FastAPI, headers: Mapping[str, str] | None = None) -> httpx.AsyncClient:
    try:
        import httpx
    except ImportError:
        pytest.fail("the client fixtures need httpx: pip install 'base-runner[testing]'", pytrace=False)

    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://challenge", headers=dict(headers or {})
    )


@pytest.fixture
async def challenge_client(challenge_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An ``httpx.AsyncClient`` on ``challenge_app``, as a miner or the master's public proxy calls it."""
    async with _client(challenge_app) as client:
        yield client


@pytest.fixture
async def master_client(challenge_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An ``httpx.AsyncClient`` on ``challenge_app`` that sends the master's bearer token and slug header."""
    headers = {
        "Authorization": f"Bearer {MASTER_TOKEN}",
        "X-Base-Challenge-Slug": challenge_app.state.challenge.name,
    }
    async with _client(challenge_app, headers) as client:
        yield client


@pytest.fixture
def challenge_owner_settings(challenge_app: FastAPI) -> list[Any]:
    """The challenge's settings objects whose ``owner_token`` ``owner_client`` sets for the test.

    By default every :class:`~base_runner.ChallengeSettings` instance held at
    module level in the challenge's package; override it to return your own.
    """
    return _package_settings(challenge_app.state.challenge.challenge.module)


@pytest.fixture
async def owner_client(
    challenge_app: FastAPI, challenge_owner_settings: list[Any], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    """An ``httpx.AsyncClient`` that calls as the challenge's owner: ``X-Owner-Token: OWNER_TOKEN``.

    :data:`OWNER_TOKEN` is set as ``owner_token`` of ``challenge_owner_settings`` for the test.
    """
    from ._core.config import Secret

    if not challenge_owner_settings:
        pytest.fail(
            "owner_client found no ChallengeSettings in the challenge's package: override the "
            "challenge_owner_settings fixture to return yours",
            pytrace=False,
        )
    for settings in challenge_owner_settings:
        monkeypatch.setattr(settings, "owner_token", Secret(OWNER_TOKEN))
    # The header that survives the master's public proxy, which strips Authorization.
    async with _client(challenge_app, {"X-Owner-Token": OWNER_TOKEN}) as client:
        yield client


@pytest.fixture
async def bridge_client(challenge_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An ``httpx.AsyncClient`` that calls as the master forwarding a submission it verified.

    Every request carries the master's token and slug, ``X-Base-Verified-Hotkey:
    BRIDGED_HOTKEY`` (send the header yourself for another hotkey) and the
    ``X-Base-Request-Hash`` of its body, as the master's bridge sends them:
    ``await bridge_client.post("/internal/v1/bridge/submissions", json=...)``.
    """
    import hashlib

    async def sign(request: httpx.Request) -> None:
        request.headers.setdefault("X-Base-Verified-Hotkey", BRIDGED_HOTKEY)
        request.headers["X-Base-Request-Hash"] = hashlib.sha256(request.read()).hexdigest()

    headers = {"Authorization": f"Bearer {MASTER_TOKEN}", "X-Base-Challenge-Slug": challenge_app.state.challenge.name}
    async with _client(challenge_app, headers) as client:
        client.event_hooks["request"].append(sign)
        yield client


@pytest.fixture
async def challenge_session(challenge_app: FastAPI) -> AsyncIterator[AsyncSession]:
    """An ``AsyncSession`` on ``challenge_app``'s database (``database.session()``); commit what it writes."""
    from ._storage.db import database

    async with database.session() as session:
        yield session


@pytest.fixture
def run_jobs(challenge_app: FastAPI) -> Callable[[], Awaitable[list[JobInfo]]]:
    """``await run_jobs()``: run every queued job to its end, in the test, and return each in its final state.

    Jobs run one at a time, each attempt with its retries, until no job is
    queued; when none is due, time moves forward to the next one (a
    ``delay``, a retry's backoff), so a test never waits for it. Jobs that
    tasks enqueue run too. Returns a :class:`~base_runner.jobs.JobInfo` for
    each job that ran, in the order they first ran.
    """
    scheduler = challenge_app.state.jobs

    async def run() -> list[JobInfo]:
        return [await scheduler.info(job_id) for job_id in await scheduler.run_until_idle()]

    return run


@pytest.fixture
def job_state(challenge_app: FastAPI) -> Callable[[str], Awaitable[JobInfo]]:
    """``await job_state(job_id)``: the job as the database holds it (a :class:`~base_runner.jobs.JobInfo`).

    ``state`` (``queued``, ``running``, ``succeeded``, ``dead``, ``cancelled``), ``attempts``,
    ``error`` and ``traceback`` of the last failure, ``progress``, ``args``, ``key``, ...
    """
    return challenge_app.state.jobs.info


@pytest.fixture
def executor_recorder(challenge_slug: str | None, challenge_settings: RunnerSettings) -> Iterator[ExecutorRecorder]:
    """Docker replaced by a recorder: ``executor.run`` checks the spec as ever, records it, and answers a reply.

    ``executor_recorder.runs`` lists each :class:`RecordedRun` (``spec``,
    ``timeout``, ``mounts``, ``labels``); ``executor_recorder.reply(result_or_function, ...)`` queues the
    answers (by default ``RunResult(0, "", "")``); ``executor_recorder.allowed_images`` adds to
    ``CHALLENGE_EXECUTOR_ALLOWED_IMAGES`` for the test. Works with or without ``challenge_app``.
    """
    from ._executor import service, setup

    recorder = ExecutorRecorder()
    previous_stand_in, setup.stand_in = setup.stand_in, recorder
    previous = service.install(setup.build(challenge_settings, challenge_slug or "challenge"))
    try:
        yield recorder
    finally:
        setup.stand_in = previous_stand_in
        service.install(previous)


def assert_valid_weights(weights: Any) -> dict[str, float]:
    """Assert the master accepts ``weights``, by the rules the runner applies; return the map.

    ``weights`` is a map from ``get_weights`` (keys non-empty strings of at
    most 128 characters, values real numbers, not ``bool``, finite and
    ``>= 0``) or a whole decoded weights response body, which is checked
    whole: ``challenge_slug``, an integer ``epoch``, the map, and
    ``metadata.computed_at``.
    """
    from ._weights.weights import body_problems, map_problems

    if isinstance(weights, Mapping) and "challenge_slug" in weights:
        problems = body_problems(dict(weights))
        weights = weights.get("weights")
    else:
        assert isinstance(weights, Mapping), f"weights must be a dict, got {type(weights).__name__}"
        problems = map_problems(weights)
    assert not problems, "the master would refuse these weights: " + "; ".join(problems)
    return dict(weights)
