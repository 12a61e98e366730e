"""Tracing: a traced ``serve`` sends its spans to a real OTLP/HTTP receiver; untraced, it loads no OpenTelemetry."""

from __future__ import annotations

import importlib.metadata
import json
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from conftest import SERVE_TOKEN, clean_env, free_port, linked_venv
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

HOTKEY = "5TracedHotkey"
MASTER = {"Authorization": f"Bearer {SERVE_TOKEN}", "X-Base-Challenge-Slug": "example"}


class Receiver:
    """An OTLP/HTTP trace receiver on loopback: keeps every body POSTed to /v1/traces."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        bodies, headers = self.bodies, self.headers

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                bodies.append(body)
                headers.append({name.lower(): value for name, value in self.headers.items()})
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def exported(self) -> tuple[dict[str, str], list[Span]]:
        """The resource attributes of the (one) exporting service and every span it sent."""
        resource: dict[str, str] = {}
        spans: list[Span] = []
        for body in self.bodies:
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                resource |= {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    spans.extend(scope_spans.spans)
        return resource, spans


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiving = Receiver()
    yield receiving
    receiving.close()


def value(any_value: AnyValue) -> object:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(item) for item in any_value.array_value.values]
    return getattr(any_value, kind)


def attributes(span: Span) -> dict[str, object]:
    return {a.key: value(a.value) for a in span.attributes}


def ancestors(span: Span, by_id: dict[bytes, Span]) -> list[Span]:
    chain = []
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        chain.append(span)
    return chain


def imported_opentelemetry(output: str) -> list[str]:
    """The opentelemetry modules a process run with PYTHONPROFILEIMPORTTIME=1 imported, from its stderr."""
    names = (line.rpartition("|")[2].strip() for line in output.splitlines() if line.startswith("import time:"))
    return sorted({name for name in names if name.split(".")[0] == "opentelemetry"})


def log_lines(output: str) -> list[dict]:
    """The JSON log lines of a runner's output (the import-time lines of PYTHONPROFILEIMPORTTIME are not)."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def exercise(served: object) -> None:
    """A write, a read with a hotkey in its path, the public weights and the master's."""
    with served.client() as client:  # type: ignore[attr-defined]
        assert client.post("/submissions", json={"hotkey": HOTKEY, "score": 3}).status_code == 201
        assert client.get(f"/submissions/{HOTKEY}").json() == [3]
        assert client.get("/weights").json()["weights"] == {HOTKEY: 3.0}
        assert client.get("/internal/v1/get_weights", headers=MASTER).status_code == 200
        assert client.get("/no/such/path").status_code == 404


def test_serve_exports_request_weights_and_sql_spans_flushed_at_sigterm(
    sites: dict[str, Path], tmp_path: Path, server, receiver: Receiver
) -> None:
    served = server(
        ["--challenge", "example", "--data-dir", str(tmp_path)],
        [sites["example"]],
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        # Longer than the test: only the flush at shutdown sends the spans.
        OTEL_BSP_SCHEDULE_DELAY="600000",
        # Every request header recorded, as an operator may ask: the token's must still be redacted.
        OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST=".*",
        PYTHONPROFILEIMPORTTIME="1",
    )
    exercise(served)
    assert receiver.bodies == []
    assert served.stop(signal.SIGTERM) == 0, served.output()

    resource, spans = receiver.exported()
    assert resource["service.name"] == "base-runner-example"
    assert resource["service.version"] == "0.1.0"
    by_id = {span.span_id: span for span in spans}
    requests = {span.name: span for span in spans if span.kind == Span.SPAN_KIND_SERVER}
    # One server span a request, so none from FastAPI's native telemetry, which must stay off.
    names = Counter(span.name for span in spans if span.kind == Span.SPAN_KIND_SERVER)
    exercised = [
        "POST /submissions",
        "GET /submissions/{hotkey}",
        "GET /weights",
        "GET /internal/v1/get_weights",
        "GET",
    ]
    assert {name: names[name] for name in exercised} == dict.fromkeys(exercised, 1), names
    assert not [span.name for span in spans if span.name.startswith("fastapi.")]
    assert not [span.name for span in spans if HOTKEY in span.name or "/no/such" in span.name]
    assert attributes(requests["GET /submissions/{hotkey}"])["http.route"] == "/submissions/{hotkey}"
    assert "http.route" not in attributes(requests["GET"])

    weights = [span for span in spans if span.name == "get_weights"]
    assert len(weights) == 1, [span.name for span in spans]
    assert attributes(weights[0])["base_runner.get_weights.outcome"] == "ok"
    assert attributes(weights[0])["base_runner.weights.entries"] == 1
    # The first weights request computed them; the master's got the cached body.
    assert ancestors(weights[0], by_id)[-1] is requests["GET /weights"]

    sql = [span for span in spans if attributes(span).get("db.system") == "sqlite"]
    insert = [span for span in sql if str(attributes(span).get("db.statement", "")).startswith("INSERT")]
    assert insert and requests["POST /submissions"] in ancestors(insert[0], by_id)
    assert any(weights[0] in ancestors(span, by_id) for span in sql if span.name.startswith("WITH"))

    # The headers were recorded, the token's redacted; no byte of the token left the process.
    captured = attributes(requests["GET /internal/v1/get_weights"])
    assert captured["http.request.header.x_base_challenge_slug"] == ["example"]
    assert captured["http.request.header.authorization"] == ["[REDACTED]"]
    assert all(SERVE_TOKEN.encode() not in body for body in receiver.bodies)
    # What the untraced test looks for, found when it is there.
    assert "opentelemetry.sdk.trace" in imported_opentelemetry(served.output())


def test_the_collector_headers_reach_the_collector_and_not_the_challenge(
    sites: dict[str, Path], tmp_path: Path, server, receiver: Receiver
) -> None:
    key = "collector-key-4f1c9a"
    served = server(
        ["--challenge", "envspy", "--data-dir", str(tmp_path)],
        [sites["testbed"]],
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_EXPORTER_OTLP_HEADERS=f"x-collector-key={key}",
    )
    with served.client() as client:
        # envspy reports which watched variables its module saw at import and sees while serving.
        assert client.get("/env").json() == {"at_import": [], "at_request": []}
    assert served.stop(signal.SIGTERM) == 0, served.output()
    assert receiver.headers and all(sent.get("x-collector-key") == key for sent in receiver.headers)
    assert key not in served.output()


def test_serve_without_an_endpoint_imports_no_more_opentelemetry_than_fastapi(
    sites: dict[str, Path], tmp_path: Path, server
) -> None:
    # FastAPI 0.165 and later import OpenTelemetry's API themselves, for their native telemetry.
    fastapi = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import fastapi"], env=clean_env(), capture_output=True, text=True
    )
    assert fastapi.returncode == 0, fastapi.stderr
    # The real serving process, asked by CPython itself to list every import it makes.
    served = server(
        ["--challenge", "example", "--data-dir", str(tmp_path)], [sites["example"]], PYTHONPROFILEIMPORTTIME="1"
    )
    exercise(served)
    assert served.stop(signal.SIGTERM) == 0, served.output()
    extra = set(imported_opentelemetry(served.output())) - set(imported_opentelemetry(fastapi.stderr))
    assert extra == set()


def without_the_otel_extra(site: Path) -> None:
    """Take out of a linked venv's ``site`` every OpenTelemetry distribution but the API, which FastAPI needs.

    What an image built without the ``otel`` extra holds.
    """
    ours = Path(sysconfig.get_paths()["purelib"])
    hidden = [
        dist
        for dist in importlib.metadata.distributions(path=[str(ours)])
        if dist.name.lower().startswith("opentelemetry-") and dist.name.lower() != "opentelemetry-api"
    ]
    assert hidden, "the otel extra is not installed"
    files = {Path(file) for dist in hidden for file in dist.files or []}
    for top in {file.parts[0] for file in files} - {"opentelemetry", ".."}:
        (site / top).unlink()  # a dist-info folder
    # The namespace folder the API shares with them: rebuilt from the API's files alone.
    (site / "opentelemetry").unlink()
    for path in (ours / "opentelemetry").rglob("*.py"):
        relative = path.relative_to(ours)
        if relative not in files:
            (site / relative).parent.mkdir(parents=True, exist_ok=True)
            (site / relative).symlink_to(path)


def test_an_endpoint_without_the_packages_warns_once_and_serves(
    sites: dict[str, Path], tmp_path: Path, receiver: Receiver
) -> None:
    python, site = linked_venv(tmp_path / "venv")
    without_the_otel_extra(site)
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    env = clean_env([sites["example"]], OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, CHALLENGE_SHARED_TOKEN=SERVE_TOKEN)
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                python,
                "-m",
                "base_runner",
                "serve",
                "--challenge",
                "example",
                "--data-dir",
                str(data),
                "--port",
                str(port),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while not answers(url + "/health"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert httpx.get(url + "/weights", timeout=5).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = log_lines(log.read_text())
    warnings = [line for line in lines if line["level"] == "WARNING"]
    assert len(warnings) == 1, lines
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in warnings[0]["message"]
    assert "pip install 'base-runner[otel]'" in warnings[0]["message"]
    assert "Traceback" not in log.read_text()
    assert receiver.bodies == []


@pytest.mark.parametrize(("behaviour", "status", "outcome"), [("fail:0", 500, "error"), ("sleep:1.5", 504, "timeout")])
def test_the_get_weights_span_records_a_failure_and_a_timeout(
    sites: dict[str, Path], tmp_path: Path, server, receiver: Receiver, behaviour: str, status: int, outcome: str
) -> None:
    served = server(
        ["--challenge", "faults", "--data-dir", str(tmp_path)],
        [sites["testbed"]],
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        CHALLENGE_FAULTS_WEIGHTS=behaviour,
        CHALLENGE_WEIGHTS_TIMEOUT="0.5",
    )
    with served.client() as client:
        assert client.get("/weights").status_code == status
    assert served.stop(signal.SIGTERM) == 0, served.output()
    _resource, spans = receiver.exported()
    [weights] = [span for span in spans if span.name == "get_weights"]
    assert attributes(weights)["base_runner.get_weights.outcome"] == outcome
    assert weights.status.code == weights.status.STATUS_CODE_ERROR
    [request] = [span for span in spans if span.name == "GET /weights"]
    assert attributes(request)["http.status_code"] == status


def test_a_collector_that_never_answers_does_not_hold_the_stop(sites: dict[str, Path], tmp_path: Path, server) -> None:
    with socket.socket() as silent:
        # Connections complete in the backlog and are never answered.
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        served = server(
            ["--challenge", "example", "--data-dir", str(tmp_path)],
            [sites["example"]],
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{silent.getsockname()[1]}",
            OTEL_EXPORTER_OTLP_TIMEOUT="1",
        )
        exercise(served)
        # Within Swarm's 10 s stop grace period, as docs/operating.md promises with a short timeout.
        assert served.stop(signal.SIGTERM, timeout=10) == 0, served.output()
    lines = log_lines(served.output())
    # The export at shutdown was tried, and given up on after its timeout.
    assert [line["level"] for line in lines if line["logger"].startswith("opentelemetry.exporter")] == ["ERROR"]
