"""A baseline: the example's ``POST /submissions`` route, same FastAPI and models, over one raw sqlite3 connection.

Only the database layer differs from the runner's, so the difference is
what the runner's sessions cost. (No ``from __future__ import
annotations`` here: FastAPI reads the route's annotations at run time.)
"""

from typing import Any

from .apps import insert, writer


def app() -> Any:
    """The app, for ``uvicorn --factory``."""
    from example_challenge.routes import NewSubmission, Recorded
    from fastapi import FastAPI

    conn = writer()
    api = FastAPI()

    @api.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.post("/submissions", status_code=201)
    async def record_submission(body: NewSubmission) -> Recorded:
        return Recorded(id=insert(conn, body.hotkey, body.score), hotkey=body.hotkey, score=body.score)

    return api
