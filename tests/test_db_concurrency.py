"""Concurrency and durability of the database layer, through real `base-runner serve` processes."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx

WRITERS = READERS = 8


async def _gather_statuses(url: str, jobs) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=WRITERS + READERS)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        return await asyncio.gather(*(job(client) for job in jobs))


def test_writers_and_readers_at_once_lose_nothing(sites: dict[str, Path], tmp_path: Path, server) -> None:
    served = server(["--challenge", "example", "--data-dir", str(tmp_path)], [sites["example"]])
    per_task = 125  # 16 clients: 2,000 requests
    acknowledged: dict[str, list[int]] = {}
    failures: list[str] = []

    def writer(n: int):
        async def run(client: httpx.AsyncClient) -> None:
            hotkey = f"5Writer{n}"
            acknowledged[hotkey] = []
            for score in range(per_task):
                response = await client.post("/submissions", json={"hotkey": hotkey, "score": score})
                if response.status_code == 201:
                    acknowledged[hotkey].append(score)
                else:
                    failures.append(f"POST {response.status_code} {response.text}")

        return run

    def reader(n: int):
        async def run(client: httpx.AsyncClient) -> None:
            for i in range(per_task):
                path = "/weights" if i % 2 else f"/submissions/5Writer{n}"
                response = await client.get(path)
                if response.status_code != 200:
                    failures.append(f"GET {path} {response.status_code} {response.text}")

        return run

    asyncio.run(_gather_statuses(served.url, [writer(n) for n in range(WRITERS)] + [reader(n) for n in range(READERS)]))
    assert failures == []
    with served.client() as client:
        for hotkey, scores in acknowledged.items():
            assert len(scores) == per_task
            assert sorted(client.get(f"/submissions/{hotkey}").json()) == scores
        assert client.get("/weights").json()["weights"] == {h: float(per_task - 1) for h in acknowledged}
    assert served.stop() == 0
    assert "database is locked" not in served.output()


def test_read_modify_write_loses_no_update(sites: dict[str, Path], tmp_path: Path, server) -> None:
    served = server(["--challenge", "ledger", "--data-dir", str(tmp_path)], [sites["testbed"]])
    rounds, keys = 40, 30

    def incrementer(client_n: int):
        async def run(client: httpx.AsyncClient) -> list[int]:
            return [(await client.post("/counters/shared/increment")).status_code for _ in range(rounds)]

        return run

    def claimer(client_n: int):
        async def run(client: httpx.AsyncClient) -> list[int]:
            return [
                (await client.post(f"/claims/k{k}", params={"owner": f"c{client_n}"})).status_code for k in range(keys)
            ]

        return run

    n = WRITERS + READERS
    increments = asyncio.run(_gather_statuses(served.url, [incrementer(i) for i in range(n)]))
    assert {code for codes in increments for code in codes} == {200}
    claims = asyncio.run(_gather_statuses(served.url, [claimer(i) for i in range(n)]))
    for k in range(keys):
        assert sorted(codes[k] for codes in claims) == [201] + [409] * (n - 1)
    with served.client() as client:
        assert client.get("/weights").json()["weights"] == {"shared": float(n * rounds)}
    assert served.stop() == 0


def _stream_writes(url: str, acknowledged: list[int], stop: threading.Event) -> None:
    async def writer(client: httpx.AsyncClient, n: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                response = await client.post("/submissions", json={"hotkey": f"5Kill{n}", "score": i})
            except httpx.TransportError:
                return  # the server is gone: this request was never acknowledged
            if response.status_code == 201:
                acknowledged.append(response.json()["id"])
            i += 1

    async def main() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            await asyncio.gather(*(writer(client, n) for n in range(WRITERS)))

    asyncio.run(main())


def test_sigkill_mid_stream_keeps_every_acknowledged_write(sites: dict[str, Path], tmp_path: Path, server) -> None:
    args = ["--challenge", "example", "--data-dir", str(tmp_path)]
    acknowledged: list[int] = []
    for round_ in range(3):
        served = server(args, [sites["example"]])
        stop = threading.Event()
        before = len(acknowledged)
        streamer = threading.Thread(target=_stream_writes, args=(served.url, acknowledged, stop))
        streamer.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < before + 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        served.proc.send_signal(signal.SIGKILL)
        served.proc.wait(10)
        stop.set()
        streamer.join(30)
        assert len(acknowledged) >= before + 200, f"round {round_}: too few writes acknowledged"

    with sqlite3.connect(tmp_path / "challenge.sqlite3") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = {row[0] for row in conn.execute("SELECT id FROM submissions")}
    assert set(acknowledged) <= stored
    # And the runner serves them after the last crash.
    served = server(args, [sites["example"]])
    with served.client() as client:
        total = sum(len(client.get(f"/submissions/5Kill{n}").json()) for n in range(WRITERS))
    assert total == len(stored)
    assert served.stop() == 0


def test_sigterm_finishes_in_flight_requests_and_checkpoints(sites: dict[str, Path], tmp_path: Path, server) -> None:
    served = server(["--challenge", "ledger", "--data-dir", str(tmp_path)], [sites["testbed"]])
    result: dict[str, httpx.Response] = {}

    def slow_request() -> None:
        result["response"] = httpx.post(served.url + "/slow-claims/late", params={"owner": "o", "delay": 3}, timeout=30)

    request = threading.Thread(target=slow_request)
    request.start()
    time.sleep(1)  # the handler is now sleeping half-way through
    served.proc.send_signal(signal.SIGTERM)
    request.join(30)
    assert served.proc.wait(30) == 0
    assert result["response"].status_code == 201
    wal = tmp_path / "challenge.sqlite3-wal"
    assert not wal.exists() or wal.stat().st_size == 0, "the WAL was not checkpointed into the database"
    with sqlite3.connect(tmp_path / "challenge.sqlite3") as conn:
        assert conn.execute("SELECT owner FROM ledger_claims WHERE key = 'late'").fetchone() == ("o",)


def test_temporary_files_go_to_the_data_dir(sites: dict[str, Path], tmp_path: Path, server) -> None:
    served = server(["--challenge", "ledger", "--data-dir", str(tmp_path)], [sites["testbed"]])
    with served.client() as client:
        assert client.get("/tmpdir").json() == {"tmpdir": str(tmp_path / "tmp")}
    assert served.stop() == 0
