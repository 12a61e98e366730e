"""What the bounty's routes accept and answer."""

from __future__ import annotations

import json
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

#: Nesting and JSON size a ``metadata`` object may have: it is stored, and answered back on every listing.
METADATA_MAX_DEPTH = 8
METADATA_MAX_BYTES = 16 * 1024


def _depth(value: object) -> int:
    """Levels of objects and arrays in ``value``; stops counting one past the maximum."""
    deepest = 0
    pending = [(value, 1)]
    while pending and deepest <= METADATA_MAX_DEPTH:
        item, level = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            pending.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _bounded(metadata: dict[str, Any]) -> dict[str, Any]:
    if _depth(metadata) > METADATA_MAX_DEPTH:
        raise ValueError(f"metadata is nested deeper than {METADATA_MAX_DEPTH} levels")
    if len(json.dumps(metadata, ensure_ascii=False)) > METADATA_MAX_BYTES:
        raise ValueError(f"metadata is larger than {METADATA_MAX_BYTES} characters of JSON")
    return metadata


#: Free-form details of a project or submission, bounded in depth and size.
Metadata = Annotated[dict[str, Any], AfterValidator(_bounded)]


class ProjectUpsert(BaseModel):
    project_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(min_length=1)
    goals: str = ""
    repository_url: str | None = None
    assets_url: str | None = None
    status: Literal["active", "paused", "completed", "cancelled"] = "active"
    deadline_at: UTCInstant | None = None
    metadata: Metadata = Field(default_factory=dict)


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
    metadata: Metadata = Field(default_factory=dict)

    @field_validator("github_url")
    @classmethod
    def on_github(cls, url: str) -> str:
        if not url.startswith(GITHUB_PREFIXES):
            raise ValueError("github_url must be a GitHub HTTPS URL")
        return url


class SubmissionIn(Work):
    #: Claimed, not proven: such a submission is stored unverified and cannot be rewarded.
    miner_hotkey: str = Field(min_length=1, max_length=128)


class SubmissionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    project_id: str = Field(validation_alias=AliasPath("project", "project_id"))
    miner_hotkey: str
    #: Whether the master verified the miner's signature (a bridged submission), not only the body's claim.
    hotkey_verified: bool
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
