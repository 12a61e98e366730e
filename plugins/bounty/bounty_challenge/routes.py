"""The bounty's routes: public reads and submissions, the owner's admin, the master's bridge."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from sqlalchemy import bindparam, delete, select
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from base_runner import OwnerAuth, VerifiedHotkey, database, verified_hotkey

from .models import Emission, Project, Review, Submission, utcnow
from .schemas import (
    EmissionOut,
    EmissionsIn,
    ProjectOut,
    ProjectUpsert,
    ReviewIn,
    ReviewOut,
    RewardIn,
    SubmissionIn,
    SubmissionOut,
    Work,
)
from .settings import settings

Reader = Annotated[AsyncSession, Depends(database.readonly_session_dependency)]
Writer = Annotated[AsyncSession, Depends(database.session_dependency)]
#: The most submissions one listing returns, newest first.
LISTING_LIMIT = 200


def _answers(*refusals: tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the refusals a route makes: ``_answers((404, "No such project"))``."""
    return {status: {"description": text} for status, text in refusals}


#: The refusals of a submission, public or bridged.
SUBMISSION_REFUSALS = _answers(
    (400, "The project's deadline has passed, or it is not active"),
    (404, "No such project"),
    (409, "The same submission exists"),
)

# Statements built once, values bound per call: SQLAlchemy then finds each one's
# compiled SQL in its cache without rebuilding the statement and its cache key
# on every request (docs/performance.md).
PROJECT_BY_ID = select(Project).where(Project.project_id == bindparam("project_id"))
PROJECTS_NEWEST_FIRST = select(Project).order_by(Project.created_at.desc(), Project.id.desc())
SUBMISSIONS_NEWEST_FIRST = (
    select(Submission).order_by(Submission.created_at.desc(), Submission.id.desc()).limit(LISTING_LIMIT)
)
SUBMISSIONS_OF_PROJECT = SUBMISSIONS_NEWEST_FIRST.where(
    Submission.project.has(Project.project_id == bindparam("project_id"))
)
LEADERBOARD = select(Emission).where(Emission.weight > 0).order_by(Emission.weight.desc(), Emission.hotkey)
DELETE_EMISSIONS = delete(Emission)
#: What ``_set_emission`` writes: all of an emission but its id.
EMISSION_COLUMNS = ("hotkey", "weight", "reason", "project_id", "submission_id", "updated_by", "updated_at")


def _upsert_emission() -> Any:
    table = Emission.__table__
    statement = insert(Emission).values({name: bindparam(name, type_=table.c[name].type) for name in EMISSION_COLUMNS})
    return statement.on_conflict_do_update(
        index_elements=[Emission.hotkey],
        set_={name: statement.excluded[name] for name in EMISSION_COLUMNS if name != "hotkey"},
    ).returning(Emission)


UPSERT_EMISSION = _upsert_emission()

public = APIRouter()
admin = APIRouter(
    prefix="/admin",
    dependencies=[Depends(OwnerAuth(settings))],
    responses=_answers((401, "The owner token is missing or wrong"), (503, "No owner token is configured")),
)
bridge = APIRouter()


async def _project(session: AsyncSession, project_id: str) -> Project:
    project = await session.scalar(PROJECT_BY_ID, {"project_id": project_id})
    if project is None:
        raise HTTPException(404, "project not found")
    return project


async def _submission(session: AsyncSession, submission_id: int) -> Submission:
    submission = await session.get(Submission, submission_id)
    if submission is None:
        raise HTTPException(404, "submission not found")
    return submission


async def _leaderboard(session: AsyncSession) -> list[EmissionOut]:
    emissions = await session.scalars(LEADERBOARD)
    return [EmissionOut.model_validate(emission) for emission in emissions]


async def _set_emission(session: AsyncSession, **values: Any) -> Emission:
    """Insert or update one hotkey's emission (every column of ``EMISSION_COLUMNS``); the last write wins."""
    values["updated_at"] = utcnow()
    result = await session.scalars(UPSERT_EMISSION, values, execution_options={"populate_existing": True})
    return result.one()


def content_hash(work: Work, hotkey: str, verified: bool) -> str:
    """What makes two submissions the same: project, hotkey (verified or claimed), URL, branch and commit.

    A claim of a hotkey never takes the hash its verified submission will have.
    """
    digest = hashlib.sha256()
    claimed = "" if verified else "claimed"
    for part in (work.project_id, hotkey, claimed, work.github_url, work.branch or "", work.commit_sha or ""):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


async def _record(session: AsyncSession, work: Work, hotkey: str, verified: bool) -> SubmissionOut:
    project = await _project(session, work.project_id)
    # The deadline first: a project the closing worker completed still says why.
    if project.deadline_at is not None and utcnow() >= project.deadline_at:
        raise HTTPException(400, "project deadline has passed")
    if project.status != "active":
        raise HTTPException(400, "project is not active")
    submission = Submission(
        project=project,
        miner_hotkey=hotkey,
        hotkey_verified=verified,
        name=work.name,
        github_url=work.github_url,
        branch=work.branch,
        commit_sha=work.commit_sha,
        description=work.description,
        submission_hash=work.submission_hash or content_hash(work, hotkey, verified),
        details=work.metadata,
        reviews=[],
    )
    session.add(submission)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise HTTPException(409, "submission already exists") from None
    return SubmissionOut.model_validate(submission)


@public.get("/projects")
async def list_projects(session: Reader) -> list[ProjectOut]:
    projects = await session.scalars(PROJECTS_NEWEST_FIRST)
    return [ProjectOut.model_validate(project) for project in projects]


@public.get("/projects/{project_id}", responses=_answers((404, "No such project")))
async def get_project(project_id: str, session: Reader) -> ProjectOut:
    return ProjectOut.model_validate(await _project(session, project_id))


@public.post("/submissions", responses=SUBMISSION_REFUSALS)
async def submit(body: SubmissionIn, session: Writer) -> SubmissionOut:
    """A submission whose hotkey is whatever the body says, as in the original: stored unverified."""
    return await _record(session, body, body.miner_hotkey, verified=False)


@bridge.post("/internal/v1/bridge/submissions", responses=SUBMISSION_REFUSALS)
async def submit_bridged(
    body: Work, miner: Annotated[VerifiedHotkey, Depends(verified_hotkey)], session: Writer
) -> SubmissionOut:
    """A submission the master bridged: the hotkey is the one whose signature it verified."""
    return await _record(session, body, miner.hotkey, verified=True)


@public.get("/submissions")
async def list_submissions(session: Reader, project_id: str | None = None) -> list[SubmissionOut]:
    if project_id:
        submissions = await session.scalars(SUBMISSIONS_OF_PROJECT, {"project_id": project_id})
    else:
        submissions = await session.scalars(SUBMISSIONS_NEWEST_FIRST)
    return [SubmissionOut.model_validate(submission) for submission in submissions]


@public.get("/submissions/{submission_id}", responses=_answers((404, "No such submission")))
async def get_submission(submission_id: int, session: Reader) -> SubmissionOut:
    return SubmissionOut.model_validate(await _submission(session, submission_id))


@public.get("/leaderboard")
async def leaderboard(session: Reader) -> list[EmissionOut]:
    """Every hotkey with a weight above zero, heaviest first."""
    return await _leaderboard(session)


@admin.post("/projects")
async def upsert_project(body: ProjectUpsert, session: Writer) -> ProjectOut:
    now = utcnow()
    project = await session.scalar(PROJECT_BY_ID, {"project_id": body.project_id})
    if project is None:
        project = Project(project_id=body.project_id, created_at=now)
        session.add(project)
    for name, value in body.model_dump(exclude={"project_id", "metadata"}).items():
        setattr(project, name, value)
    project.details = body.metadata
    project.updated_at = now
    await session.commit()
    return ProjectOut.model_validate(project)


@admin.post("/reviews", responses=_answers((404, "No such submission")))
async def review_submission(body: ReviewIn, session: Writer) -> ReviewOut:
    submission = await _submission(session, body.submission_id)
    review = Review(submission=submission, **body.model_dump(exclude={"submission_id"}))
    submission.status = body.status
    session.add(review)
    await session.commit()
    return ReviewOut.model_validate(review)


@admin.get("/emissions")
async def list_emissions(session: Reader) -> list[EmissionOut]:
    return await _leaderboard(session)


@admin.post("/emissions", responses=_answers((400, "No emission is given")))
async def set_emissions(body: EmissionsIn, session: Writer) -> list[EmissionOut]:
    """Set hotkeys' emissions; with ``replace``, every other hotkey's is dropped, all in one transaction."""
    if not body.emissions:
        raise HTTPException(400, "emissions cannot be empty")
    if body.replace:
        await session.execute(DELETE_EMISSIONS)
    for entry in body.emissions:
        await _set_emission(session, **entry.model_dump(), updated_by=body.updated_by)
    emissions = await _leaderboard(session)
    await session.commit()
    return emissions


@admin.post(
    "/submissions/{submission_id}/reward",
    responses=_answers((404, "No such submission"), (409, "The submission's hotkey is claimed, not verified")),
)
async def reward_submission(submission_id: int, body: RewardIn, session: Writer) -> EmissionOut:
    """Make the submission's miner's emission ``weight``, and mark the submission rewarded."""
    submission = await _submission(session, submission_id)
    if not submission.hotkey_verified:
        # Anyone can claim any hotkey on the public route: only the master's verification earns weight.
        raise HTTPException(
            409, "the submission's hotkey is claimed, not verified: only a submission the master bridged is rewarded"
        )
    submission.status = "rewarded"
    emission = await _set_emission(
        session,
        hotkey=submission.miner_hotkey,
        weight=body.weight,
        reason=body.reason,
        project_id=submission.project.project_id,
        submission_id=submission.id,
        updated_by=body.updated_by,
    )
    await session.commit()
    return EmissionOut.model_validate(emission)
