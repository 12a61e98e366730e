"""What an operator sees of a running ``serve``: JSON log lines, the metrics, no secret anywhere."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import httpx
from conftest import log_records, run_cli
from prometheus_client.parser import text_string_to_metric_families

from base_runner import __version__

MASTER = {"Authorization": "Bearer metrics-master-token"}


def scrape(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/internal/v1/metrics``, by name and sorted labels."""
    response = client.get("/internal/v1/metrics", headers=MASTER)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_metrics_move_with_requests_writes_and_weights(sites: dict[str, Path], tmp_path: Path, server) -> None:
    served = server(["--data-dir", str(tmp_path)], [sites["example"]], CHALLENGE_SHARED_TOKEN="metrics-master-token")
    with served.client() as client:
        before = scrape(client)
        assert client.post("/submissions", json={"hotkey": "5Metric", "score": 4}).status_code == 201
        assert client.get("/submissions/5Metric").json() == [4]
        for _ in range(3):
            assert client.get("/weights").status_code == 200
        after = scrape(client)

    route = {"route": "/submissions/{hotkey}", "method": "GET", "status": "200"}
    assert value(after, "base_runner_http_requests_total", **route) == 1
    # Route templates, never raw paths: no label holds the hotkey.
    assert not any("5Metric" in str(labels) for _, labels in after)
    assert value(after, "base_runner_http_requests_total", route="/weights", method="GET", status="200") == 3
    assert value(after, "base_runner_http_request_duration_seconds_count", route="/submissions", method="POST") == 1
    assert value(after, "base_runner_get_weights_duration_seconds_count", outcome="ok") == 1
    assert value(after, "base_runner_weights_cache_misses_total") == 1
    assert value(after, "base_runner_weights_cache_hits_total") == 2
    assert value(after, "base_runner_weights_cache_age_seconds") >= 0
    assert value(before, "base_runner_weights_cache_age_seconds") == -1
    commits = "base_runner_db_write_transactions_total"
    assert value(after, commits, outcome="commit") == value(before, commits, outcome="commit") + 1
    assert value(after, "base_runner_db_writer_wait_seconds_count") > value(
        before, "base_runner_db_writer_wait_seconds_count"
    )
    assert value(after, "base_runner_sqlite_file_bytes", file="database") > 0
    assert value(after, "base_runner_part_up", part="challenge", state="started") == 1
    assert value(after, "base_runner_part_up", part="weights", state="ok") == 1
    assert value(after, "base_runner_get_weights_last_timestamp_seconds", outcome="ok") > 0
    assert value(after, "process_resident_memory_bytes") > 0
    assert (
        value(after, "base_runner_info", challenge="example", challenge_version="0.1.0", runner_version=__version__)
        == 1
    )
    assert served.stop() == 0


def test_metrics_refused_without_the_token(sites: dict[str, Path], tmp_path: Path, server) -> None:
    served = server(["--data-dir", str(tmp_path)], [sites["example"]], CHALLENGE_SHARED_TOKEN="metrics-master-token")
    with served.client() as client:
        assert client.get("/internal/v1/metrics").status_code == 401
        wrong = client.get("/internal/v1/metrics", headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 401
        assert "process_" not in wrong.text
    assert served.stop() == 0


def test_log_lines_are_json_with_the_challenge_and_one_access_line_per_request(
    sites: dict[str, Path], tmp_path: Path, server
) -> None:
    served = server(["--data-dir", str(tmp_path)], [sites["example"]])
    with served.client() as client:
        client.post("/submissions", json={"hotkey": "5Logged", "score": 1})
        client.get("/submissions/5Logged", headers={"X-Request-ID": "req-obs-42"})
        client.get("/no/such/page")
        client.get("/weights")
    assert served.stop() == 0
    lines = json_lines(served.output())
    assert len(lines) == len(served.output().splitlines()), served.output()  # every line is one JSON object
    for line in lines:
        assert {"time", "level", "logger", "challenge", "message"} <= line.keys()
    assert {line["challenge"] for line in lines if line["logger"].startswith("uvicorn")} == {"example"}
    access = [line for line in lines if line["logger"] == "base_runner.access"]
    # Logged once each answer is complete: the order may differ from the requests'.
    assert sorted((line["method"], line["route"], line["status"]) for line in access) == [
        ("GET", "/health", 200),  # the fixture's wait for the server
        ("GET", "/submissions/{hotkey}", 200),
        ("GET", "unmatched", 404),
        ("POST", "/submissions", 201),
    ]  # the cached weights answer is at debug level
    assert all(line["duration_ms"] >= 0 for line in access)
    # Each access line carries the correlation id of its request, the one sent when sane.
    assert [line["correlation_id"] for line in access if line["route"] == "/submissions/{hotkey}"] == ["req-obs-42"]
    assert all(line.get("correlation_id") for line in access)


def test_text_log_format_and_access_log_of_weights(sites: dict[str, Path], tmp_path: Path, server) -> None:
    served = server(
        ["--data-dir", str(tmp_path), "--log-format", "text"], [sites["example"]], CHALLENGE_ACCESS_LOG="true"
    )
    with served.client() as client:
        client.get("/weights")
    assert served.stop() == 0
    output = served.output()
    assert not json_lines(output)
    assert re.search(r"INFO    base_runner\.access \[example \S+\] GET /weights 200 ", output), output


def test_access_log_false_logs_no_access_line(sites: dict[str, Path], tmp_path: Path, server) -> None:
    served = server(["--data-dir", str(tmp_path)], [sites["example"]], CHALLENGE_ACCESS_LOG="false")
    with served.client() as client:
        assert client.post("/submissions", json={"hotkey": "5Quiet", "score": 1}).status_code == 201
        assert client.get("/no/such/page").status_code == 404
        client.get("/weights")
    assert served.stop() == 0
    lines = json_lines(served.output())
    assert lines, served.output()
    assert [line for line in lines if line["logger"] == "base_runner.access"] == []


def test_no_secret_in_a_whole_debug_run(sites: dict[str, Path], tmp_path: Path, server) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "challenge_token").write_text("file-master-token-7f3a\n")
    (secrets / "owner_token").write_text("file-owner-token-91c2\n")
    used = ["file-master-token-7f3a", "file-owner-token-91c2", "guessed-token-5d20", "guessed-owner-88e1"]
    served = server(
        ["--challenge", "bounty", "--data-dir", str(tmp_path), "--debug"],
        [sites["bounty"]],
        CHALLENGE_SHARED_TOKEN_FILE=str(secrets / "challenge_token"),
        CHALLENGE_OWNER_TOKEN_FILE=str(secrets / "owner_token"),
    )
    master = {"Authorization": "Bearer file-master-token-7f3a", "X-Base-Challenge-Slug": "bounty"}
    with served.client() as client:
        assert client.get("/internal/v1/get_weights", headers=master).status_code == 200
        assert client.get("/internal/v1/metrics", headers=master).status_code == 200
        project = {"project_id": "p", "title": "T", "description": "D"}
        owner = {"X-Owner-Token": "file-owner-token-91c2"}
        assert client.post("/admin/projects", headers=owner, json=project).status_code == 200
        guessed = {"Authorization": "Bearer guessed-token-5d20", "X-Base-Challenge-Slug": "bounty"}
        assert client.get("/internal/v1/get_weights", headers=guessed).status_code == 401
        wrong_owner = {"Authorization": "Bearer guessed-owner-88e1"}
        assert client.post("/admin/projects", headers=wrong_owner, json=project).status_code == 401
    assert served.stop() == 0
    output = served.output()
    assert any(r["level"] == "DEBUG" for r in log_records(output) if isinstance(r, dict))  # the run logged at debug
    for secret in used:
        assert secret not in output


def test_status_of_a_live_instance(sites: dict[str, Path], tmp_path: Path, server) -> None:
    served = server(["--data-dir", str(tmp_path)], [sites["example"]], CHALLENGE_SHARED_TOKEN="metrics-master-token")
    with served.client() as client:
        assert client.get("/weights").status_code == 200
    token = {"CHALLENGE_SHARED_TOKEN": "metrics-master-token"}
    result = run_cli("status", "--url", served.url, "--json", **token)
    assert result.returncode == 0, result.stdout + result.stderr
    found = json.loads(result.stdout)
    assert found["ready"] is True
    assert found["parts"]["challenge"]["state"] == "started" and found["parts"]["challenge"]["since"]
    assert found["weights"]["calls"] == {"ok": 1}
    text = run_cli("status", "--url", served.url, **token)
    assert text.returncode == 0
    assert text.stdout.startswith(f"example 0.1.0 on base-runner {__version__} at {served.url}: ready")
    assert "last weights computation: ok at " in text.stdout
    refused = run_cli("status", "--url", served.url, CHALLENGE_SHARED_TOKEN="not-the-token")
    assert refused.returncode == 2 and "refused the token (401)" in refused.stderr
    assert served.stop() == 0
    gone = run_cli("status", "--url", served.url, **token)
    assert gone.returncode == 3 and "no answer from" in gone.stderr


def test_status_of_an_instance_that_is_not_ready(sites: dict[str, Path], tmp_path: Path, server) -> None:
    with sqlite3.connect(tmp_path / "challenge.sqlite3") as conn:
        conn.execute("CREATE TABLE submissions (id INTEGER PRIMARY KEY, hotkey VARCHAR(128))")
    served = server(["--data-dir", str(tmp_path)], [sites["example"]], CHALLENGE_SHARED_TOKEN="metrics-master-token")
    result = run_cli("status", "--url", served.url, CHALLENGE_SHARED_TOKEN="metrics-master-token")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "NOT READY" in result.stdout
    assert "DOWN schema" in result.stdout and "drift" in result.stdout
    assert served.stop() == 0
