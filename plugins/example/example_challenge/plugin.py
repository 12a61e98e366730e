"""The example challenge's hooks."""

from fastapi import APIRouter
from sqlalchemy import func, select

from base_runner import database, hookimpl

from .models import Submission
from .routes import router


@hookimpl
def register_routers() -> APIRouter:
    return router


@hookimpl
async def get_weights() -> dict[str, float]:
    # One row per hotkey, aggregated by SQLite over the (hotkey, score) index:
    # no submission row is loaded into Python.
    query = select(Submission.hotkey, func.max(Submission.score)).group_by(Submission.hotkey)
    async with database.session(readonly=True) as session:
        rows = await session.execute(query)
        return {hotkey: float(best) for hotkey, best in rows}
