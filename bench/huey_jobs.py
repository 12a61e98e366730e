"""The jobs baseline: huey with ``SqliteStorage`` at ``synchronous=FULL``, a thread consumer that polls every 1 ms.

``python -m bench.huey_jobs FOLDER COUNT LATENCY_COUNT GAP WORKERS`` enqueues
``COUNT`` no-op tasks one after the other and times them to the last one's
end, then ``LATENCY_COUNT`` more, ``GAP`` seconds apart, each timed from its
enqueue to its start; prints ``{"per_second", "latencies"}`` as JSON. Every
enqueue and dequeue is a committed, synced write, as the runner's are.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path


def main() -> None:
    from huey import SqliteHuey

    folder, count, latency_count, gap, workers = sys.argv[1:6]
    huey = SqliteHuey("bench", filename=str(Path(folder) / "huey.sqlite3"), fsync=True, results=False)
    started: list[float] = []
    finished: list[float] = []

    @huey.task()
    def noop(enqueued: float) -> None:
        now = time.monotonic()
        started.append(now - enqueued)
        finished.append(now)

    # The consumer polls an empty queue every millisecond: it starts a task as soon as one is there.
    consumer = huey.create_consumer(
        workers=int(workers), worker_type="thread", periodic=False, initial_delay=0.001, backoff=1.0, max_delay=0.001
    )
    consumer.start()
    try:
        first = time.monotonic()
        for _ in range(int(count)):
            noop(time.monotonic())
        while len(finished) < int(count):
            time.sleep(0.001)
        per_second = int(count) / (max(finished) - first)
        del started[:], finished[:]
        for _ in range(int(latency_count)):
            noop(time.monotonic())
            time.sleep(float(gap))
        while len(finished) < int(latency_count):
            time.sleep(0.001)
    finally:
        consumer.stop(graceful=True)
    print(json.dumps({"per_second": per_second, "latencies": started, "median": statistics.median(started)}))


if __name__ == "__main__":
    main()
