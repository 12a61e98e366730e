"""A forgotten commit is a 500 naming the route, never a silent 2xx; a writer kept waiting is told by whom."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from wire_schemas import ErrorResponse

from base_runner import database
from base_runner._storage import db


def _rows(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "challenge.sqlite3") as conn:
        return conn.execute("SELECT count(*) FROM submissions").fetchone()[0]


def _route(app: FastAPI, path: str, flush: bool, commit: bool) -> None:
    # Imported here: the example is on sys.path only once conftest's session fixture installed it.
    from example_challenge.models import Submission

    async def endpoint(session: Annotated[AsyncSession, Depends(database.session_dependency)]) -> dict[str, int]:
        submission = Submission(hotkey="5Lost", score=1)
        session.add(submission)
        if flush:
            await session.flush()
        if commit:
            await session.commit()
        return {"id": submission.id or 0}

    app.router.add_api_route(path, endpoint, methods=["POST"], status_code=201)


@pytest.mark.parametrize("flush", [True, False], ids=["flushed", "added"])
async def test_changes_never_committed_answer_500_and_name_the_route(
    challenge_app: FastAPI,
    challenge_client: httpx.AsyncClient,
    challenge_data_dir: Path,
    caplog: pytest.LogCaptureFixture,
    flush: bool,
) -> None:
    _route(challenge_app, "/forgetful", flush=flush, commit=False)
    with caplog.at_level(logging.ERROR, logger="base_runner"):
        response = await challenge_client.post("/forgetful")
    assert response.status_code == 500
    body = ErrorResponse.model_validate(response.json())
    assert body.code == "uncommitted_changes"
    assert body.detail.startswith("challenge example: POST /forgetful returned 201 with changes it never committed")
    assert [r.getMessage() for r in caplog.records if "never committed; they are rolled back" in r.getMessage()]
    assert _rows(challenge_data_dir) == 0
    # The writer was given back: the next request writes.
    assert (await challenge_client.post("/submissions", json={"hotkey": "5A", "score": 2})).status_code == 201


async def test_a_route_that_commits_is_answered_as_it_says(
    challenge_app: FastAPI, challenge_client: httpx.AsyncClient, challenge_data_dir: Path
) -> None:
    _route(challenge_app, "/careful", flush=True, commit=True)
    response = await challenge_client.post("/careful")
    assert response.status_code == 201 and response.json()["id"] == 1
    assert _rows(challenge_data_dir) == 1


@pytest.mark.anyio
async def test_a_writer_kept_waiting_is_told_who_holds_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "POOL_TIMEOUT", 0.3)
    own = db.Database()
    own.configure(f"sqlite+aiosqlite:///{tmp_path / 'x.sqlite3'}")
    try:
        async with own.session() as first:
            await first.execute(text("CREATE TABLE t (x INTEGER)"))
            await first.execute(text("INSERT INTO t VALUES (1)"))
            task = asyncio.current_task()
            assert task is not None
            with pytest.raises(db.WriterBusy) as waited:
                async with own.session() as second:
                    await second.execute(text("SELECT 1"))
        assert str(waited.value).startswith(
            f"waited 0.3 s for the writer connection, which the task {task.get_name()!r} still holds: "
            "commit or close a session before opening another"
        )
        assert "QueuePool" not in str(waited.value)
    finally:
        await own.close()
