"""Column types SQLite lacks: a timestamp that comes back timezone-aware."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC that reads back as an aware ``datetime`` in UTC.

    SQLite has no time zones: ``DateTime(timezone=True)`` stores the wall
    time and gives back a naive ``datetime``, which then compares wrongly
    with ``datetime.now(UTC)`` or fails to. This type converts aware values
    to UTC before storing and marks what it reads as UTC. A naive value is
    refused (``ValueError``), since it could mean any zone::

        closes_at: Mapped[datetime] = mapped_column(UTCDateTime)
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"UTCDateTime needs an aware datetime, got the naive {value.isoformat()}")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)
