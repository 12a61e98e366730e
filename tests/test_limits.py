"""Request limits, through a real ``base-runner serve`` process and raw sockets."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

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
    assert b'"error": "body_too_large"' in response and b"CHALLENGE_MAX_BODY_BYTES" in response
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
            assert response.json()["error"] == "duplicate_header"
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
