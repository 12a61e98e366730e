"""The bounty's hooks: its routes, its closing worker, and weights from the owner-set emissions."""

from __future__ import annotations

import math
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import APIRouter, FastAPI
from sqlalchemy import select

from base_runner import database, hookimpl, run_worker

from .closing import keep_closing
from .models import Emission
from .routes import admin, bridge, public


@hookimpl
def register_routers() -> list[APIRouter]:
    return [public, admin, bridge]


@hookimpl
def lifespan(app: FastAPI) -> AbstractAsyncContextManager[Any]:
    return run_worker(app, keep_closing, name="close-expired-projects")


#: Built once, as every statement of the port (routes.py).
POSITIVE_WEIGHTS = select(Emission.hotkey, Emission.weight).where(Emission.weight > 0)


@hookimpl
async def get_weights() -> dict[str, float]:
    """Each hotkey's emission, when it is a finite number above zero."""
    async with database.session(readonly=True) as session:
        rows = await session.execute(POSITIVE_WEIGHTS)
        return {hotkey: weight for hotkey, weight in rows if math.isfinite(weight)}
