"""What the bounty's routes accept and answer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AliasPath, BaseModel, ConfigDict, Field, field_validator

#: A raw emission weight: the master normalizes; NaN and infinity never get in.
Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]
GITHUB_PREFIXES = ("https://github.com/", "https://www.github.com/")


def _as_utc(instant: datetime) -> datetime:
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


#: An instant in UTC; one sent without a time zone is taken to be UTC.
UTCInstant = Annotated[datetime, AfterValidator(_as_utc)]


class ProjectUpsert(BaseModel):
    project_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(min_length=1)
    goals: str = ""
    repository_url: str | None = None
    assets_url: str | None = None
    status: Literal["active", "paused", "completed", "cancelled"] = "active"
    deadline_at: UTCInstant | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class ProjectOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    project_id: str
    title: str
    description: str
    goals: str
    repository_url: str | None
    assets_url: str | None
    status: str
    deadline_at: datetime | None
    metadata: dict[str, Any] = Field(validation_alias="details")
    created_at: datetime
    updated_at: datetime


class Work(BaseModel):
    """A submission's content; the hotkey comes from the body or from the master."""

    project_id: str = Field(min_length=1, max_length=128)
    name: str = Field(default="submission", min_length=1, max_length=160)
    github_url: str = Field(min_length=1)
    branch: str | None = Field(default=None, max_length=160)
    commit_sha: str | None = Field(default=None, max_length=128)
    description: str = ""
    submission_hash: str | None = Field(default=None, min_length=8, max_length=128)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("github_url")
    @classmethod
    def on_github(cls, url: str) -> str:
        if not url.startswith(GITHUB_PREFIXES):
            raise ValueError("github_url must be a GitHub HTTPS URL")
        return url


class SubmissionIn(Work):
    miner_hotkey: str = Field(min_length=1, max_length=128)


class SubmissionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    project_id: str = Field(validation_alias=AliasPath("project", "project_id"))
    miner_hotkey: str
    name: str
    github_url: str
    branch: str | None
    commit_sha: str | None
    description: str
    submission_hash: str
    status: str
    metadata: dict[str, Any] = Field(validation_alias="details")
    review_score: float | None = None
    created_at: datetime
    updated_at: datetime


class ReviewIn(BaseModel):
    submission_id: int
    score: float = Field(ge=0, le=100)
    status: Literal["reviewed", "accepted", "rejected"] = "reviewed"
    comments: str = ""
    reviewer: str = "owner"


class ReviewOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    submission_id: int
    reviewer: str
    score: float
    status: str
    comments: str
    created_at: datetime


class EmissionEntry(BaseModel):
    hotkey: str = Field(min_length=1, max_length=128)
    weight: Weight
    reason: str = ""
    project_id: str | None = None
    submission_id: int | None = None


class EmissionsIn(BaseModel):
    #: Drop every emission not in this request.
    replace: bool = False
    updated_by: str = "owner"
    emissions: list[EmissionEntry]


class RewardIn(BaseModel):
    weight: Weight
    reason: str = ""
    updated_by: str = "owner"


class EmissionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    hotkey: str
    weight: float
    reason: str
    project_id: str | None
    submission_id: int | None
    updated_by: str
    updated_at: datetime
