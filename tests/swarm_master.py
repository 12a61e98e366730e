"""A master-like client, run by tests/test_image.py in a container of its own on the challenge network.

Standard library only, since it runs in the challenge image. Given the
service's URL, the slug and the challenge version the master has on record,
it passes the seed master's readiness gate (up to 12 tries, 2 s apart, of
``/health`` and ``/version``) or exits 1 saying why not; then it makes each
call of the JSON list it was given and prints every answer, status and body,
as one JSON list.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

#: What the master requires by default before it routes any traffic.
REQUIRED_CAPABILITIES = ("get_weights", "proxy_routes")


def call(url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.load(exc)


def gate_problem(base: str, slug: str, version: str) -> str | None:
    """What keeps the master from routing to the challenge, or None: the fields its gate reads."""
    status, health = call(f"{base}/health")
    if status != 200 or health.get("status") != "ok" or health.get("slug") != slug:
        return f"/health answered {status} {health}"
    if health.get("version") != version:
        return f"/health reports version {health.get('version')!r}, not {version!r}"
    status, info = call(f"{base}/version")
    if status != 200 or info.get("api_version") != "1.0" or info.get("challenge_version") != version:
        return f"/version answered {status} {info}"
    missing = [c for c in REQUIRED_CAPABILITIES if c not in info.get("capabilities", [])]
    return f"/version lacks {missing}" if missing else None


def main(base: str, slug: str, version: str, calls: list[dict[str, Any]]) -> int:
    problem = "not tried"
    for _ in range(12):
        try:
            problem = gate_problem(base, slug, version)
        except OSError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if problem is None:
            break
        time.sleep(2)
    else:
        print(f"readiness gate not passed: {problem}", file=sys.stderr)
        return 1
    answers = [call(f"{base}{c['path']}", c.get("method", "GET"), c.get("body"), c.get("headers")) for c in calls]
    print(json.dumps(answers))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])))
