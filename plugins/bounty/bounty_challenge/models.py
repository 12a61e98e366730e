"""The bounty's tables, prefixed ``bounty_`` so that they share a database with any other challenge's."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from base_runner import Base

# Relationships name their targets by module path: in one process (a test
# run) several challenges' models share the runner's registry, where a bare
# "Submission" could be another challenge's class.
_HERE = __name__


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A UTC instant: SQLite keeps no time zone, so store naive UTC and read it back aware.

    A naive value from a request is taken to be UTC. Comparisons in SQL stay
    right because every stored value has the same form.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is None:
            return value
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Project(Base):
    """A bounty the owner posts; miners submit work for it until its deadline."""

    __tablename__ = "bounty_projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: The public id, in URLs and requests.
    project_id: Mapped[str] = mapped_column(String(128), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    goals: Mapped[str] = mapped_column(Text, default="")
    repository_url: Mapped[str | None] = mapped_column(Text)
    assets_url: Mapped[str | None] = mapped_column(Text)
    #: active, paused, completed or cancelled; the closing worker completes active ones past their deadline.
    status: Mapped[str] = mapped_column(String(32), default="active", index=True)
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    details: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    submissions: Mapped[list[Submission]] = relationship(f"{_HERE}.Submission", back_populates="project")


class Submission(Base):
    """A miner's GitHub work for a project; one per project and content hash."""

    __tablename__ = "bounty_submissions"
    __table_args__ = (UniqueConstraint("project_pk", "submission_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_pk: Mapped[int] = mapped_column(ForeignKey("bounty_projects.id"), index=True)
    miner_hotkey: Mapped[str] = mapped_column(String(128), index=True)
    #: True when the master verified the hotkey's signature; a public submission only claims it.
    hotkey_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    name: Mapped[str] = mapped_column(String(160))
    github_url: Mapped[str] = mapped_column(Text)
    branch: Mapped[str | None] = mapped_column(String(160))
    commit_sha: Mapped[str | None] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    submission_hash: Mapped[str] = mapped_column(String(128))
    #: submitted, then the review's status (reviewed, accepted, rejected), then rewarded.
    status: Mapped[str] = mapped_column(String(32), default="submitted", index=True)
    details: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    project: Mapped[Project] = relationship(f"{_HERE}.Project", back_populates="submissions", lazy="joined")
    reviews: Mapped[list[Review]] = relationship(f"{_HERE}.Review", back_populates="submission", lazy="selectin")

    @property
    def review_score(self) -> float | None:
        """The best score any review gave it."""
        return max((review.score for review in self.reviews), default=None)


class Review(Base):
    """The owner's evaluation of one submission."""

    __tablename__ = "bounty_reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("bounty_submissions.id"), index=True)
    reviewer: Mapped[str] = mapped_column(String(128), default="owner")
    score: Mapped[float] = mapped_column(Float, default=0.0)
    status: Mapped[str] = mapped_column(String(32), default="reviewed")
    comments: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    submission: Mapped[Submission] = relationship(f"{_HERE}.Submission", back_populates="reviews")


class Emission(Base):
    """The raw weight the owner set for a hotkey: what ``get_weights`` returns."""

    __tablename__ = "bounty_emissions"

    hotkey: Mapped[str] = mapped_column(String(128), primary_key=True)
    weight: Mapped[float] = mapped_column(Float, default=0.0, index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    project_id: Mapped[str | None] = mapped_column(String(128))
    submission_id: Mapped[int | None] = mapped_column(Integer)
    updated_by: Mapped[str] = mapped_column(String(128), default="owner")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
