"""``docker stop`` and Swarm stop a service with SIGTERM: the runner must end cleanly, with 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_serve_exits_0_on_sigterm(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "CHALLENGE_HOST": "127.0.0.1",
        "CHALLENGE_PORT": str(port),
        "CHALLENGE_DATA_DIR": str(tmp_path),
    }
    env.pop("CHALLENGE_DATABASE_URL", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "base_runner", "serve", "--challenge", "example"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
            try:
                opener.open(f"http://127.0.0.1:{port}/health", timeout=2).close()
                break
            except OSError:
                time.sleep(0.1)
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=20)
    finally:
        server.kill()
    assert server.returncode == 0, output.decode(errors="replace")
    assert b"Application shutdown complete" in output
