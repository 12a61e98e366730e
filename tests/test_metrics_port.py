"""The separate metrics port (``CHALLENGE_METRICS_PORT``): ``GET /metrics`` without a token, on a real ``serve``."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from conftest import free_port, run_cli
from prometheus_client.parser import text_string_to_metric_families
from test_observability import json_lines, value

TOKEN = "metrics-port-token"
MASTER = {"Authorization": f"Bearer {TOKEN}", "X-Base-Challenge-Slug": "example"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_port_answers_without_the_token_and_closes_at_sigterm(
    sites: dict[str, Path], tmp_path: Path, server
) -> None:
    port = free_port()
    served = server(
        ["--data-dir", str(tmp_path)],
        [sites["example"]],
        CHALLENGE_SHARED_TOKEN=TOKEN,
        CHALLENGE_METRICS_PORT=str(port),
    )
    metrics_url = f"http://127.0.0.1:{port}"  # the default address: serve's own --host
    with served.client() as client, httpx.Client(base_url=metrics_url, timeout=10) as scraper:
        first = scraper.get("/metrics")
        assert first.status_code == 200, first.text
        assert first.headers["content-type"].startswith("text/plain")
        before = samples(first.text)
        assert client.post("/submissions", json={"hotkey": "5Port", "score": 3}).status_code == 201
        assert client.get("/internal/v1/get_weights", headers=MASTER).status_code == 200
        after = samples(scraper.get("/metrics").text)
        # The main port still wants the token; the metrics port serves nothing but /metrics.
        assert client.get("/internal/v1/metrics").status_code == 401
        for path in ("/", "/internal/v1/metrics", "/metrics/x", "/health"):
            assert scraper.get(path).status_code == 404, path
        assert scraper.post("/metrics").status_code == 405
        guarded = samples(client.get("/internal/v1/metrics", headers=MASTER).text)

    commits = "base_runner_db_write_transactions_total"
    assert value(after, commits, outcome="commit") == value(before, commits, outcome="commit") + 1
    weights = "base_runner_get_weights_duration_seconds_count"
    assert value(before, weights, outcome="ok") == 0
    assert value(after, weights, outcome="ok") == 1
    posted = {"route": "/submissions", "method": "POST", "status": "201"}
    assert value(after, "base_runner_http_requests_total", **posted) == 1
    # One registry behind both: the token-guarded answer counts the same requests.
    assert value(guarded, "base_runner_http_requests_total", **posted) == 1
    assert value(guarded, weights, outcome="ok") == 1
    # Scrapes of the metrics port are not requests of the app.
    assert not any(labels and dict(labels).get("route") == "/metrics" for _, labels in after)

    assert served.stop() == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(metrics_url + "/metrics", timeout=2)
    logged = [line["message"] for line in json_lines(served.output())]
    assert f"metrics on {metrics_url}/metrics, without a token: publish this port to the node only" in logged


def test_metrics_host_is_where_the_port_binds(sites: dict[str, Path], tmp_path: Path, server) -> None:
    # Any 127/8 address is the loopback on Linux: the app on .1, the metrics port on .2 only.
    port = free_port()
    served = server(
        ["--data-dir", str(tmp_path)],
        [sites["example"]],
        CHALLENGE_METRICS_PORT=str(port),
        CHALLENGE_METRICS_HOST="127.0.0.2",
    )
    assert httpx.get(f"http://127.0.0.2:{port}/metrics", timeout=10).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    assert served.stop() == 0


def errors_of(stderr: str) -> list[str]:
    """stderr's lines that are not JSON log lines."""
    return [line for line in stderr.splitlines() if not line.startswith("{")]


def test_a_metrics_port_in_use_is_exit_2_before_anything_opens(sites: dict[str, Path], tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        result = run_cli(
            "serve",
            *("--data-dir", str(tmp_path), "--host", "127.0.0.1", "--port", str(free_port())),
            sites=[sites["example"]],
            CHALLENGE_SHARED_TOKEN=TOKEN,
            CHALLENGE_METRICS_PORT=str(taken),
        )
    assert result.returncode == 2, result.stderr
    assert errors_of(result.stderr) == [
        f"base-runner: error: CHALLENGE_METRICS_PORT: cannot listen on 127.0.0.1:{taken}: "
        "Address already in use; free the port, choose another one, or fix CHALLENGE_METRICS_HOST"
    ]
    assert "Traceback" not in result.stderr
    # Refused before the lifespan: no database was created, no challenge startup logged.
    assert not (tmp_path / "challenge.sqlite3").exists()
    assert not any("startup" in line["message"] for line in json_lines(result.stderr))


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("0", "Input should be greater than or equal to 1"),
        ("65536", "Input should be less than or equal to 65535"),
        ("nine", "Input should be a valid integer"),
        ("same", "Value error, must differ from CHALLENGE_PORT"),
    ],
)
def test_an_invalid_metrics_port_is_one_line_and_exit_2(
    sites: dict[str, Path], tmp_path: Path, given: str, problem: str
) -> None:
    port = free_port()
    result = run_cli(
        "serve",
        *("--data-dir", str(tmp_path), "--port", str(port)),
        sites=[sites["example"]],
        CHALLENGE_METRICS_PORT=str(port) if given == "same" else given,
    )
    assert result.returncode == 2, result.stderr
    [line] = errors_of(result.stderr)
    assert line.startswith(f"base-runner: error: CHALLENGE_METRICS_PORT: {problem}"), line
    assert "Traceback" not in result.stderr


def test_an_empty_metrics_port_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from base_runner._core.settings import load_settings

    monkeypatch.setenv("CHALLENGE_METRICS_PORT", "")
    monkeypatch.setenv("CHALLENGE_METRICS_HOST", " ")
    settings = load_settings()
    assert (settings.metrics_port, settings.metrics_host) == (None, None)
