"""Group commit, through real `base-runner serve` processes on real SQLite files.

Requests whose transactions wait for the writer while another's commit is
pending are committed with it, in one COMMIT: each keeps its own savepoint,
none is answered before that COMMIT is on disk, and a failed COMMIT fails
them all. ``/held-claims`` (the testbed's ledger) holds the writer after its
write until a given number of other sessions wait for it, which makes the
group.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import httpx
from conftest import SERVE_TOKEN
from loopfs import loop_fs

LEDGER = ["--challenge", "ledger"]
MASTER = {"Authorization": f"Bearer {SERVE_TOKEN}"}


def commits(client: httpx.Client) -> float:
    """COMMITs the runner's writer made so far, from its metrics."""
    text = client.get("/internal/v1/metrics", headers=MASTER).text
    samples = (line.split() for line in text.splitlines())
    return next(float(sample[-1]) for sample in samples if sample[0] == "base_runner_db_commits_total")


def wait_for_write_lock(database: Path) -> None:
    """Return once a transaction holds the database's write lock (the held claim's, after its write)."""
    conn = sqlite3.connect(database, timeout=0, isolation_level=None)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                assert "locked" in str(exc)
                return
            conn.execute("ROLLBACK")
            time.sleep(0.01)
        raise AssertionError("the held claim never took the write lock")
    finally:
        conn.close()


def in_one_group(url: str, database: Path, held: dict[str, object], others: list[tuple[str, dict[str, str]]]):
    """POST the held claim, then, once it holds the writer, every other request at once; all the answers."""

    async def run() -> tuple[httpx.Response, list[httpx.Response]]:
        limits = httpx.Limits(max_connections=len(others) + 1)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            holder = asyncio.create_task(client.post(f"/held-claims/{held.pop('key')}", params=held))
            await asyncio.to_thread(wait_for_write_lock, database)
            answers = await asyncio.gather(*(client.post(path, params=params) for path, params in others))
            return await holder, list(answers)

    return asyncio.run(run())


def test_concurrent_writes_all_land_in_one_commit_and_a_failing_one_loses_only_its_own(
    sites: dict[str, Path], tmp_path: Path, server
) -> None:
    served = server([*LEDGER, "--data-dir", str(tmp_path)], [sites["testbed"]])
    claims = [(f"/claims/c{n}", {"owner": f"o{n}"}) for n in range(10)]
    # Its first claim is fine; its second clashes with the held claim, which is not committed yet
    # but is in the same transaction: the pair is refused and its first claim rolled back alone.
    pair = ("/claim-pairs/p1/h", {"owner": "pair"})
    # Reads the held claim, not committed yet, and answers 409 once it is.
    clash = ("/claims/h", {"owner": "late"})
    # Moves the weights (the ledger's are its counters), which the cache computed before the group.
    increment = ("/counters/g/increment", {})
    with served.client() as client:
        assert client.post("/counters/before/increment").json() == {"value": 1}
        assert client.get("/weights").json()["weights"] == {"before": 1.0}
        before = commits(client)
    holder, answers = in_one_group(
        served.url,
        tmp_path / "challenge.sqlite3",
        {"key": "h", "owner": "held", "waiters": str(len(claims) + 3)},
        [*claims, increment, pair, clash],
    )
    assert holder.status_code == 201, holder.text
    assert [a.status_code for a in answers[: len(claims)]] == [201] * len(claims), [a.text for a in answers]
    assert answers[len(claims)].json() == {"value": 1}
    assert answers[-2].status_code == 500 and answers[-2].json()["code"] == "internal_error"
    assert answers[-1].status_code == 409 and "claimed by held" in answers[-1].json()["detail"]
    with served.client() as client:
        stored = client.get("/claims").json()
        assert stored == {"h": "held", **{f"c{n}": f"o{n}" for n in range(10)}}
        # Twelve writes, one rolled back, one refused: one COMMIT.
        assert commits(client) - before == 1
        # The weights cache saw that COMMIT.
        assert client.get("/weights").json()["weights"] == {"before": 1.0, "g": 1.0}
    assert served.stop() == 0
    with sqlite3.connect(tmp_path / "challenge.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM ledger_claims").fetchone() == (11,)


def test_a_constraint_failing_at_commit_acknowledges_no_request_of_its_group(
    sites: dict[str, Path], tmp_path: Path, server
) -> None:
    served = server([*LEDGER, "--data-dir", str(tmp_path)], [sites["testbed"]])
    claims = [(f"/claims/c{n}", {"owner": f"o{n}"}) for n in range(5)]
    # Reads the held claim, which the failed COMMIT never makes durable: not answered 409.
    clash = ("/claims/h", {"owner": "late"})
    holder, answers = in_one_group(
        served.url,
        tmp_path / "challenge.sqlite3",
        # Its payout names a claim that does not exist: the deferred foreign key fails the COMMIT.
        {"key": "h", "owner": "held", "waiters": str(len(claims) + 1), "payout_for": "missing"},
        [*claims, clash],
    )
    statuses = [holder.status_code] + [a.status_code for a in answers]
    assert all(status >= 500 for status in statuses), [holder.text] + [a.text for a in answers]
    assert answers[-1].status_code == 503 and answers[-1].json()["code"] == "commit_failed", answers[-1].text
    with served.client() as client:
        assert client.get("/claims").json() == {}
        # The writer is usable again, for a request alone and for another group.
        assert client.post("/claims/c0", params={"owner": "again"}).status_code == 201
        assert client.get("/claims").json() == {"c0": "again"}
    assert served.stop() == 0
    with sqlite3.connect(tmp_path / "challenge.sqlite3") as conn:
        assert conn.execute("SELECT key FROM ledger_claims").fetchall() == [("c0",)]
        assert conn.execute("SELECT count(*) FROM ledger_payouts").fetchone() == (0,)


def test_a_commit_failing_on_a_full_disk_acknowledges_no_request_of_its_group(
    sites: dict[str, Path], tmp_path: Path, server
) -> None:
    with loop_fs(tmp_path, 24) as fs:
        # No free-space refusal before the write: the COMMIT itself must meet the full disk.
        served = server(
            [*LEDGER, "--data-dir", str(fs.mount)],
            [sites["testbed"]],
            CHALLENGE_MIN_FREE_MB="0",
            CHALLENGE_DISK_CHECK_INTERVAL="3600",
        )
        claims = [(f"/claims/c{n}", {"owner": f"o{n}"}) for n in range(5)]
        database = fs.mount / "challenge.sqlite3"

        async def fill_then_group() -> tuple[httpx.Response, list[httpx.Response]]:
            async with httpx.AsyncClient(base_url=served.url, timeout=60) as client:
                # 2 MiB in the held claim: more than a full volume has, so its COMMIT cannot write the WAL.
                params = {"owner": "held", "waiters": str(len(claims)), "pad": str(2 * 1024 * 1024)}
                holder = asyncio.create_task(client.post("/held-claims/h", params=params))
                await asyncio.to_thread(wait_for_write_lock, database)
                await asyncio.to_thread(fs.fill)
                answers = await asyncio.gather(*(client.post(path, params=params) for path, params in claims))
                return await holder, list(answers)

        holder, answers = asyncio.run(fill_then_group())
        statuses = [holder.status_code] + [a.status_code for a in answers]
        assert all(status in (503, 507) for status in statuses), [holder.text] + [a.text for a in answers]
        assert holder.json()["code"] == "disk_full", holder.text
        served.stop()
        (fs.mount / "filler").unlink()
        with sqlite3.connect(database) as conn:
            assert conn.execute("SELECT count(*) FROM ledger_claims").fetchone() == (0,)
