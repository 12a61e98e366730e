"""Wording shared by the messages the runner prints."""

from __future__ import annotations


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 row``, ``2 rows``: a count with its noun (``many`` when adding an s will not do)."""
    return f"{count} {noun}" if count == 1 else f"{count} {many or noun + 's'}"
