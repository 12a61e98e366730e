"""``serve --reload``: a change to the challenge's code is served without a restart by hand."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
from conftest import PACKAGES, eventually, free_port, logged
from test_limits import connect, read_response, status_of
from test_tracing import Receiver, answers


def test_a_changed_route_is_served_after_the_reload(sites: dict[str, Path], tmp_path: Path, server) -> None:
    # A source copy first on the path, as an editable install would be; the site gives the entry point.
    source = tmp_path / "src"
    shutil.copytree(PACKAGES["example"] / "example_challenge", source / "example_challenge")
    (tmp_path / "data").mkdir()
    served = server(
        ["--reload", "--challenge", "example", "--data-dir", str(tmp_path / "data")], [source, sites["example"]]
    )
    with served.client() as client:
        assert client.get("/reloaded").status_code == 404
        routes = source / "example_challenge" / "routes.py"
        routes.write_text(
            routes.read_text() + '\n\n@router.get("/reloaded")\nasync def reloaded() -> dict[str, bool]:\n'
            '    return {"reloaded": True}\n'
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.get("/reloaded").status_code == 200:
                    break
            except Exception:  # the server is between two children
                pass
            assert time.monotonic() < deadline, served.output()
            time.sleep(0.2)
        assert client.get("/reloaded").json() == {"reloaded": True}
    assert served.stop() == 0, served.output()
    records = served.records()
    # One format from both processes, uvicorn's reloader and server lines included (JSON off a terminal).
    assert [line for line in records if isinstance(line, str)] == [], served.output()
    assert logged(records, "reloading when"), served.output()
    assert any(r["logger"].startswith("uvicorn") and "Reloading" in r["message"] for r in records), served.output()
    assert logged(records, "challenge example"), "the child's own lines are in it too"


def test_reload_serves_with_the_metrics_port_tracing_and_connection_limits(
    sites: dict[str, Path], tmp_path: Path, server
) -> None:
    # What serve runs, the reloader's child runs: each part below was missing from it once.
    receiver = Receiver()
    metrics_port = free_port()
    served = server(
        ["--reload", "--challenge", "example", "--data-dir", str(tmp_path)],
        [sites["example"]],
        CHALLENGE_METRICS_PORT=str(metrics_port),
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_BSP_SCHEDULE_DELAY="600000",  # only the flush at shutdown sends the spans
        wait=False,
    )
    try:
        # The child imports the runner, the challenge and OpenTelemetry afresh: on a loaded machine
        # that takes longer than the fixture's own wait.
        eventually(lambda: answers(served.url + "/health"), "the child to answer /health", timeout=90)
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert scraped.status_code == 200 and "base_runner_info" in scraped.text, served.output()
        with connect(served.url) as sock:
            many = b"".join(b"X-%d: 1\r\n" % n for n in range(200))
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
            response = read_response(sock)
        assert status_of(response) == 431 and b"too_many_headers" in response, response[:300]
        with served.client() as client:
            assert client.get("/weights").status_code == 200
    finally:
        # SIGTERM, whatever happened: the reloader stops its child (the fixture's SIGKILL would orphan it).
        stopped = served.stop()
        receiver.close()
    assert stopped == 0, served.output()
    names = {span.name for span in receiver.exported()[1]}
    assert {"GET /weights", "get_weights"} <= names, names
