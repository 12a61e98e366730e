"""The example challenge's database file at a given size, built fast with raw sqlite3.

The schema is the one the runner's ``create_all`` makes from the example's
models, indexes included, so queries run against the same file the
challenge would have.
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
from pathlib import Path

from sqlalchemy import create_engine

#: Characters of an SS58 address, which is what a real hotkey looks like.
_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def hotkey(number: int) -> str:
    """A stable, hotkey-shaped string of 48 characters."""
    digest = hashlib.sha512(str(number).encode()).digest()
    return "5" + "".join(_BASE58[byte % 58] for byte in digest[:47])


def build(path: Path, rows: int, hotkeys: int, seed: int = 8) -> Path:
    """Create ``path`` with ``rows`` submissions spread uniformly over ``hotkeys`` hotkeys."""
    from example_challenge.models import Submission

    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        Submission.metadata.create_all(conn, tables=[Submission.__table__])
    engine.dispose()

    rng = random.Random(seed)
    keys = [hotkey(i) for i in range(hotkeys)]
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        # Indexes built once after the insert cost a fraction of keeping them up to date row by row.
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'submissions' AND sql IS NOT NULL"
        ).fetchall()
        for name, _sql in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        conn.executemany(
            "INSERT INTO submissions (hotkey, score) VALUES (?, ?)",
            ((keys[rng.randrange(hotkeys)], rng.randrange(1_000_000)) for _ in range(rows)),
        )
        for _name, sql in indexes:
            conn.execute(sql)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return path
