from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from base_runner import database

from .models import Submission

router = APIRouter()
DatabaseSession = Annotated[AsyncSession, Depends(database.session_dependency)]


@router.get("/submissions/{hotkey}")
async def list_submissions(hotkey: str, session: DatabaseSession) -> list[int]:
    result = await session.execute(select(Submission).where(Submission.hotkey == hotkey))
    return [submission.score for submission in result.scalars()]


class NewSubmission(BaseModel):
    hotkey: str = Field(min_length=1, max_length=128)
    score: int = Field(ge=0)


class Recorded(BaseModel):
    id: int
    hotkey: str
    score: int


@router.post("/submissions", status_code=201)
async def record_submission(body: NewSubmission, session: DatabaseSession) -> Recorded:
    submission = Submission(hotkey=body.hotkey, score=body.score)
    session.add(submission)
    await session.commit()
    return Recorded(id=submission.id, hotkey=submission.hotkey, score=submission.score)
