"""Round trips to the driver's thread per request, counted where aiosqlite queues them.

Every call aiosqlite runs on its thread is put on the connection's queue;
this counts the puts, so the figure does not depend on how the runner's
driver layer (``base_runner._storage.driver``) counts itself. The requests go through
the runner's real app in this process (``httpx.ASGITransport``): the same
routes, sessions and driver as ``base-runner serve``.

``python -m bench.trips SLUG DATA_DIR`` prints a JSON object of trips per
request by case; one challenge per process, as the runner serves it.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import sys
from pathlib import Path
from typing import Any

REQUESTS = 50


class _CountingQueue(queue.SimpleQueue):  # type: ignore[type-arg]
    puts = 0

    def put_nowait(self, item: Any) -> None:
        _CountingQueue.puts += 1
        super().put_nowait(item)


async def _count(send: Any, requests: int = REQUESTS) -> float:
    """Trips per call of ``send(number)``, over ``requests`` calls after one to warm up."""
    await send(-1)
    before = _CountingQueue.puts
    for number in range(requests):
        await send(number)
    return (_CountingQueue.puts - before) / requests


def _ok(response: Any) -> None:
    if response.status_code >= 300:
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: {response.status_code}")


async def measure(slug: str, data_dir: Path) -> dict[str, float]:
    import aiosqlite.core
    import httpx

    from base_runner._cli.options import start
    from base_runner._http.assembly import build_runner
    from base_runner._weights.weights import compute

    aiosqlite.core.SimpleQueue = _CountingQueue  # type: ignore[misc]
    settings, loaded = start(slug, data_dir=data_dir)
    app = build_runner(loaded, settings).app
    counts: dict[str, float] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://runner") as client:

            async def weights(_number: int) -> None:
                await compute(loaded, settings.weights_timeout)

            if slug == "example":

                async def write(number: int) -> None:
                    _ok(await client.post("/submissions", json={"hotkey": f"5Trips{number % 16}", "score": number + 1}))

                counts["example `POST /submissions`"] = await _count(write)
                counts["example `get_weights` (uncached)"] = await _count(weights)
            else:
                owner = {"Authorization": f"Bearer {os.environ['CHALLENGE_OWNER_TOKEN']}"}
                project = {"project_id": "trips", "title": "Trips", "description": "counted"}
                _ok(await client.post("/admin/projects", headers=owner, json=project))

                async def submit(number: int) -> None:
                    work = {
                        "project_id": "trips",
                        "miner_hotkey": "5Trips",
                        "github_url": f"https://github.com/miner/work{number}",
                    }
                    _ok(await client.post("/submissions", json=work))

                counts["bounty `POST /submissions`"] = await _count(submit)
                counts["bounty `get_weights` (uncached)"] = await _count(weights)
    return counts


if __name__ == "__main__":
    print(json.dumps(asyncio.run(measure(sys.argv[1], Path(sys.argv[2])))))
