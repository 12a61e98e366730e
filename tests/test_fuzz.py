"""Schemathesis against real ``base-runner serve`` processes of both plugins, authenticated routes included.

Checks: no 5xx, every status documented in ``/openapi.json``, every body
matching its documented schema and content type. Bounded in examples and
time: the three runs take about a minute and a half together.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCHEMATHESIS = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance"
MASTER_TOKEN = "fuzz-master-token"
OWNER_TOKEN = "fuzz-owner-token"


def fuzz(url: str, tmp_path: Path, *options: str) -> None:
    assert SCHEMATHESIS is not None, "pip install -e '.[test]' installs schemathesis"
    result = subprocess.run(
        [
            SCHEMATHESIS,
            "run",
            f"{url}/openapi.json",
            f"--checks={CHECKS}",
            "--max-examples=40",
            "--max-time=25",
            "--workers=1",
            "--seed=20261202",
            "--request-timeout=10",
            *options,
        ],
        cwd=tmp_path,  # its cache and reports stay in the test's folder
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


@pytest.fixture
def bounty(sites: dict[str, Path], tmp_path: Path, server):
    return server(
        ["--data-dir", str(tmp_path)],
        [sites["bounty"]],
        CHALLENGE_SHARED_TOKEN=MASTER_TOKEN,
        CHALLENGE_OWNER_TOKEN=OWNER_TOKEN,
    )


def test_fuzz_the_example(sites: dict[str, Path], tmp_path: Path, server) -> None:
    served = server(["--data-dir", str(tmp_path)], [sites["example"]], CHALLENGE_SHARED_TOKEN=MASTER_TOKEN)
    fuzz(served.url, tmp_path)
    assert "Traceback" not in served.output()


def test_fuzz_the_bounty_as_its_owner(bounty, tmp_path: Path) -> None:
    fuzz(bounty.url, tmp_path, f"--header=X-Owner-Token: {OWNER_TOKEN}", "--exclude-path-regex=^/internal/")
    assert "Traceback" not in bounty.output()


def test_fuzz_the_bounty_as_the_master(bounty, tmp_path: Path) -> None:
    fuzz(
        bounty.url,
        tmp_path,
        f"--header=Authorization: Bearer {MASTER_TOKEN}",
        "--header=X-Base-Challenge-Slug: bounty",
        "--header=X-Base-Verified-Hotkey: 5FuzzedMiner",
        "--include-path-regex=^/internal/",
    )
    assert "Traceback" not in bounty.output()
