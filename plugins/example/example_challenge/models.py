from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from base_runner import Base


class Submission(Base):
    __tablename__ = "submissions"
    # The seed's hotkey index, plus (hotkey, score) so that the best score per
    # hotkey is read from the index alone instead of scanning every row.
    __table_args__ = (Index("ix_submissions_hotkey_score", "hotkey", "score"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hotkey: Mapped[str] = mapped_column(String(128), index=True)
    score: Mapped[int] = mapped_column(Integer, default=0)
