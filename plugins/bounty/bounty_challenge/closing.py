"""The closing worker: active projects whose deadline has passed become completed."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import update

from base_runner import database

from .models import Project, utcnow
from .settings import settings

log = logging.getLogger("bounty_challenge")


async def close_expired_projects() -> int:
    """Complete every active project whose deadline has passed; return how many."""
    now = utcnow()
    async with database.session() as session:
        result = await session.execute(
            update(Project)
            .where(Project.status == "active", Project.deadline_at <= now)
            .values(status="completed", updated_at=now)
            .execution_options(synchronize_session=False)
        )
        await session.commit()
    return result.rowcount


async def keep_closing() -> None:
    """Sweep every ``CHALLENGE_CLOSE_INTERVAL`` seconds, until cancelled.

    A fault is not caught: run under :func:`base_runner.run_worker`, it stops
    the process, which Swarm restarts, instead of leaving projects open
    past their deadline in silence.
    """
    while True:
        closed = await close_expired_projects()
        if closed:
            log.info("completed %d project(s) whose deadline passed", closed)
        await asyncio.sleep(settings.close_interval)
