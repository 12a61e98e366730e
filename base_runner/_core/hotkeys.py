"""What a hotkey may be: one place for the rules the weights, the master's bridge and the push each apply."""

from __future__ import annotations

import re

#: The longest hotkey the runner keeps: in a weights map, and as a hotkey the master verified.
MAX_HOTKEY_LENGTH = 128

_SS58 = re.compile(r"[1-9A-HJ-NP-Za-km-z]{3,64}")


def push_problem(hotkey: str) -> str | None:
    """Why a 3.1 master would refuse ``hotkey`` as a key of a pushed map; ``None`` when it would not."""
    if not _SS58.fullmatch(hotkey):
        return "not SS58-shaped (3 to 64 characters of the base58 alphabet)"
    if not any(char.isalpha() for char in hotkey):
        return "only digits, which the master takes for a uid"
    return None
