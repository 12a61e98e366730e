"""``get_weights`` against raw SQLite on the same file: the example's hook through the runner, and the raw queries.

Raw queries run on Python's ``sqlite3`` with nothing around them; the
example runs as the runner calls it (:func:`base_runner._weights.weights.compute`:
the hook, its read-only session on ``aiosqlite``, validation). Each is timed
warm, several times, in turns, and the median is kept.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

#: Raw SQL for "each hotkey's best score", slowest first.
RAW = {
    # What a first attempt looks like: every row into Python, max there.
    "naive": "SELECT hotkey, score FROM submissions",
    "group_by": "SELECT hotkey, max(score) FROM submissions GROUP BY hotkey",
    # Two index seeks per hotkey over the (hotkey, score) index.
    "skip_scan": """
        WITH RECURSIVE hotkeys(hotkey) AS (
            SELECT min(hotkey) FROM submissions
            UNION ALL
            SELECT (SELECT min(hotkey) FROM submissions WHERE hotkey > hotkeys.hotkey)
            FROM hotkeys WHERE hotkey IS NOT NULL
        )
        SELECT hotkey, (SELECT max(score) FROM submissions WHERE submissions.hotkey = hotkeys.hotkey)
        FROM hotkeys WHERE hotkey IS NOT NULL
    """,
}


def raw_answer(conn: sqlite3.Connection, name: str) -> dict[str, float]:
    """The weights map from one raw query."""
    if name == "naive":
        best: dict[str, float] = {}
        for hotkey, score in conn.execute(RAW[name]):
            if score > best.get(hotkey, -1.0):
                best[hotkey] = float(score)
        return best
    return {hotkey: float(score) for hotkey, score in conn.execute(RAW[name])}


async def _measure(path: Path, names: list[str], repeats: int) -> dict[str, float]:
    from base_runner import database
    from base_runner._plugins.plugins import load, select
    from base_runner._weights.weights import compute

    conn = sqlite3.connect(path)
    database.configure(f"sqlite+aiosqlite:///{path}")
    loaded = load(select("example"))
    try:
        expected = raw_answer(conn, "group_by")  # also warms the page cache
        for name in names:
            assert raw_answer(conn, name) == expected, f"{name} disagrees with group_by"
        assert (await compute(loaded, 60)).weights == expected, "the example's weights disagree with the raw queries"
        times: dict[str, list[float]] = {name: [] for name in [*names, "example"]}
        # Alternating, so that a burst of load from elsewhere hits every query alike.
        for _ in range(repeats):
            for name in names:
                start = time.perf_counter()
                raw_answer(conn, name)
                times[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            await compute(loaded, 60)
            times["example"].append(time.perf_counter() - start)
        return {name: min(values) * 1000 for name, values in times.items()}
    finally:
        conn.close()
        await database.close()


def measure(path: Path, names: list[str], repeats: int) -> dict[str, float]:
    """Fastest milliseconds on ``path`` of each raw query in ``names`` and of the example's ``get_weights``.

    Every answer is checked to be the same weights map first.
    """
    try:
        import uvloop
    except ImportError:  # uvicorn then serves on asyncio's own loop too
        return asyncio.run(_measure(path, names, repeats))
    return uvloop.run(_measure(path, names, repeats))
