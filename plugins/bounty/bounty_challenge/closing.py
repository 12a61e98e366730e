"""The closing worker: active projects whose deadline has passed become completed."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import update

from base_runner import database

from .models import Project, utcnow
from .settings import settings

log = logging.getLogger("bounty_challenge")


async def close_expired_projects() -> list[str]:
    """Complete every active project whose deadline has passed; return their ids."""
    now = utcnow()
    async with database.session() as session:
        closed = await session.scalars(
            update(Project)
            .where(Project.status == "active", Project.deadline_at <= now)
            .values(status="completed", updated_at=now)
            .returning(Project.project_id)
        )
        project_ids = list(closed)
        await session.commit()
    return project_ids


async def keep_closing() -> None:
    """Sweep every ``CHALLENGE_CLOSE_INTERVAL`` seconds, until cancelled.

    A fault is not caught: run under :func:`base_runner.run_worker`, it stops
    the process, which Swarm restarts, instead of leaving projects open
    past their deadline in silence.
    """
    while True:
        closed = await close_expired_projects()
        if closed:
            log.info("completed the projects whose deadline passed: %s", ", ".join(closed))
        await asyncio.sleep(settings.close_interval)
