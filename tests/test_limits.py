"""Request limits, through a real ``base-runner serve`` process and raw sockets."""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import BASE_RUNNER, clean_env, free_port

TOKEN = "limits-token"
MASTER = {"Authorization": f"Bearer {TOKEN}", "X-Base-Challenge-Slug": "bounty"}


def connect(url: str, timeout: float = 10) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    return sock


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or the socket's timeout)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response.split(b" ", 2)[1])


@pytest.fixture
def bounty(sites: dict[str, Path], tmp_path: Path, server):
    """Start the bounty with ``bounty(**env)``."""

    def start(**env: str):
        return server(
            ["--data-dir", str(tmp_path)],
            [sites["bounty"]],
            CHALLENGE_SHARED_TOKEN=TOKEN,
            CHALLENGE_OWNER_TOKEN="owner-token",
            **env,
        )

    return start


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(bounty) -> None:
    served = bounty()
    with connect(served.url) as sock:
        began = time.monotonic()
        sock.sendall(
            b"POST /submissions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 104857600\r\n\r\n"
        )
        response = read_response(sock)
        elapsed = time.monotonic() - began
    assert status_of(response) == 413
    assert b'"code":"body_too_large"' in response and b"CHALLENGE_MAX_BODY_BYTES" in response
    assert elapsed < 5


def test_a_chunked_body_is_cut_off_while_it_streams(bounty) -> None:
    served = bounty(CHALLENGE_MAX_BODY_BYTES="65536")
    with connect(served.url) as sock:
        sock.sendall(
            b"POST /submissions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"x" * 16384
        sent = 0
        try:
            # Far more than the limit: the server must answer and close long before the end.
            for _ in range(64 * 1024):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = read_response(sock)
    assert status_of(response) == 413
    assert sent < 64 * 1024 * len(chunk)
    # The process still serves.
    with served.client() as client:
        assert client.get("/projects").status_code == 200


def test_an_unauthenticated_bridge_call_is_refused_before_its_body(bounty) -> None:
    served = bounty()
    with connect(served.url) as sock:
        began = time.monotonic()
        # A body within the limit, declared but never sent: the answer cannot wait for it.
        sock.sendall(
            b"POST /internal/v1/bridge/submissions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        )
        response = read_response(sock)
        elapsed = time.monotonic() - began
    assert status_of(response) == 401
    assert b"missing_token" in response
    assert elapsed < 5


@pytest.fixture
def capped(sites: dict[str, Path], tmp_path: Path, server):
    """The testbed's sdk challenge: /reviews capped at 64 bytes, /owner/bulletins at 64 behind the owner token."""
    return server(
        ["--challenge", "sdk", "--data-dir", str(tmp_path)],
        [sites["testbed"]],
        CHALLENGE_SHARED_TOKEN=TOKEN,
        CHALLENGE_OWNER_TOKEN="owner-token",
    )


def test_a_routes_own_limit_refuses_a_declared_body_before_it_is_sent(capped) -> None:
    with connect(capped.url) as sock:
        began = time.monotonic()
        sock.sendall(
            b"POST /reviews HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
        response = read_response(sock)
        elapsed = time.monotonic() - began
    assert status_of(response) == 413
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    error = json.loads(body)
    assert error["code"] == "body_too_large"
    assert error["detail"] == "the request body is larger than 64 bytes (this route's limit (MaxBody))"
    assert elapsed < 5


def test_a_routes_own_limit_cuts_a_chunked_body_off_while_it_streams(capped) -> None:
    with connect(capped.url) as sock:
        sock.sendall(
            b"POST /reviews HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sock.sendall(b"20\r\n" + b'{"text": "' + b"x" * 22 + b"\r\n")
        sock.sendall(b"40\r\n" + b"x" * 64 + b"\r\n")  # past 64 bytes; the body never ends
        response = read_response(sock)
    assert status_of(response) == 413 and b"body_too_large" in response


def test_a_declared_body_over_the_global_limit_is_refused_before_the_owner_token(capped) -> None:
    # As docs/sdk.md says: the connection layer refuses it before any route, or its token, is looked at.
    with connect(capped.url) as sock:
        sock.sendall(
            b"POST /owner/notes HTTP/1.1\r\nHost: x\r\nX-Owner-Token: wrong\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2000000\r\n\r\n"
        )
        response = read_response(sock)
    assert status_of(response) == 413 and b"CHALLENGE_MAX_BODY_BYTES" in response


def test_a_routes_own_limit_takes_what_fits_and_comes_after_the_owner_token(capped) -> None:
    with capped.client() as client:
        fits = client.post("/reviews", json={"text": "x" * 40})
        assert (fits.status_code, fits.json()) == (200, {"length": 40})
        # 100 bytes: under the route's own 128, over the 64 its router was included with.
        over = client.post("/reviews", json={"text": "x" * 88})
        assert (over.status_code, over.json()["code"]) == (413, "body_too_large")
        # Other routes keep CHALLENGE_MAX_BODY_BYTES.
        assert (
            client.post("/owner/notes", json={"text": "x" * 1000}, headers={"X-Owner-Token": "owner-token"}).status_code
            == 200
        )
        owner = {"X-Owner-Token": "owner-token"}
        assert client.post("/owner/bulletins", json={"text": "short"}, headers=owner).status_code == 200
        assert client.post("/owner/bulletins", json={"text": "x" * 100}, headers=owner).status_code == 413
        stranger = client.post("/owner/bulletins", json={"text": "x" * 100}, headers={"X-Owner-Token": "wrong"})
        assert (stranger.status_code, stranger.json()["code"]) == (401, "invalid_owner_token")


@pytest.mark.parametrize(
    "headers",
    [
        [("Authorization", f"Bearer {TOKEN}"), ("Authorization", "Bearer other"), ("X-Base-Challenge-Slug", "bounty")],
        [("Authorization", f"Bearer {TOKEN}"), ("X-Base-Challenge-Slug", "bounty"), ("X-Base-Challenge-Slug", "x")],
        [("Authorization", f"Bearer {TOKEN}"), ("X-Platform-Challenge-Slug", "x"), ("X-Platform-Challenge-Slug", "y")],
    ],
)
def test_duplicate_credential_headers_are_refused(bounty, headers) -> None:
    served = bounty()
    with served.client() as client:
        for path in ("/internal/v1/get_weights", "/weights", "/projects"):
            response = client.get(path, headers=httpx.Headers(headers))
            assert response.status_code == 400, (path, response.text)
            assert response.json()["code"] == "duplicate_header"
        assert client.get("/internal/v1/get_weights", headers=MASTER).status_code == 200


def test_a_body_that_trickles_in_is_cut_off(bounty) -> None:
    served = bounty(CHALLENGE_BODY_TIMEOUT="1")
    with connect(served.url) as sock:
        sock.sendall(
            b"POST /submissions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        began = time.monotonic()
        response = read_response(sock)
        elapsed = time.monotonic() - began
    assert status_of(response) == 408
    assert b"body_timeout" in response
    assert elapsed < 5


def test_headers_past_their_size_or_count_are_refused_with_431(bounty) -> None:
    served = bounty()
    for head, error in [
        (b"GET /projects HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 64 * 1024 + b"\r\n\r\n", b"headers_too_large"),
        (
            b"GET /projects HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % n for n in range(200)) + b"\r\n",
            b"too_many_headers",
        ),
    ]:
        with connect(served.url) as sock:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(head)
            response = read_response(sock)
        assert status_of(response) == 431, response[:300]
        assert error in response
    # A head just under both limits, in several reads, and a body in the same read as the head, still pass.
    with connect(served.url) as sock:
        head = b"GET /projects HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " + b"a" * 30000 + b"\r\n"
        sock.sendall(head[:10000])
        time.sleep(0.1)
        sock.sendall(head[10000:] + b"".join(b"X-%d: 1\r\n" % n for n in range(90)) + b"\r\n")
        assert status_of(read_response(sock)) == 200
    with served.client() as client:
        body = '{"project_id": "p", "title": "t", "description": "' + "d" * 200_000 + '"}'
        response = client.post(
            "/admin/projects",
            content=body,
            headers={"X-Owner-Token": "owner-token", "Content-Type": "application/json"},
        )
        assert response.status_code == 200


def test_a_head_that_trickles_in_is_answered_408_and_an_idle_connection_closed(bounty) -> None:
    served = bounty(CHALLENGE_HEADER_TIMEOUT="1")
    with connect(served.url) as idle, connect(served.url) as slow:
        slow.sendall(b"GET /projects HTTP/1.1\r\nHost: x\r\n")
        began = time.monotonic()
        response = read_response(slow)
        assert status_of(response) == 408 and b"CHALLENGE_HEADER_TIMEOUT" in response
        assert read_response(idle) == b""
        assert time.monotonic() - began < 5


def test_a_flood_of_half_sent_connections_does_not_lock_others_out(sites: dict[str, Path], tmp_path: Path) -> None:
    """300 connections that never finish their headers, against a process that may open 256 files."""
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [BASE_RUNNER, "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(tmp_path)],
        env=clean_env([sites["example"]], CHALLENGE_HEADER_TIMEOUT="60"),
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)),
    )
    url = f"http://127.0.0.1:{port}"
    held: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "serve.log").read_text()
                time.sleep(0.1)
        for _ in range(300):
            sock = connect(url)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            held.append(sock)
        began = time.monotonic()
        for _ in range(5):
            with httpx.Client(base_url=url, timeout=5) as client:
                assert client.post("/submissions", json={"hotkey": "5A", "score": 1}).status_code == 201
        served_in = time.monotonic() - began
        open_now = sum(1 for sock in held if _still_open(sock))
    finally:
        for sock in held:
            sock.close()
        proc.terminate()
        proc.wait(20)
        log.close()
    assert served_in < 10
    assert open_now <= 256 - 64
    assert "at most 192 connections are kept open" in (tmp_path / "serve.log").read_text()


def _still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
