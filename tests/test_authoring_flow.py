"""docs/authoring.md, walked as an author follows it, as far as it goes without the network.

Install, new, its tests, check, serve, the image build and the CI that pushes it: each step's
commands and expected output are read from the guide itself, and the published names from
base_runner/_authoring/release.py, so the guide cannot drift from what the runner does.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, clean_env, eventually, install, run_cli

from base_runner._authoring import release

GUIDE = (ROOT / "docs" / "authoring.md").read_text()
SLUG = "bounty-hunt"


def blocks(kind: str) -> list[str]:
    """Every fenced block of ``kind`` in the guide, in order."""
    return re.findall(rf"^```{kind}\n(.*?)^```$", GUIDE, re.MULTILINE | re.DOTALL)


def command(prefix: str) -> list[str]:
    """The guide's one shell command that starts with ``prefix``, split into words."""
    (line,) = {line.strip() for block in blocks("sh") for line in block.splitlines() if line.startswith(prefix)}
    return line.split()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Step 2: ``base-runner new bounty-hunt`` in an empty folder; step 3's install of it."""
    root = tmp_path_factory.mktemp("author")
    words = command("base-runner new ")
    assert words == ["base-runner", "new", SLUG]
    result = subprocess.run(
        [str(Path(sys.executable).with_name("base-runner")), *words[1:]],
        cwd=root,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return root / SLUG, install(root / SLUG, root / "site")


def test_1_install_names_the_release_tag_and_the_published_package() -> None:
    assert f'pip install "{release.requirement(source="git")}"' in GUIDE
    assert f'pip install "{release.requirement(source="pypi")}"' in GUIDE
    assert f"({release.REPOSITORY})" in GUIDE
    assert release.IMAGE in GUIDE and "<org>" not in GUIDE


def test_3_its_own_tests_pass(project: tuple[Path, Path], tmp_path: Path) -> None:
    folder, site = project
    assert command("pytest") == ["pytest"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t")],
        cwd=folder,
        env=clean_env([site]),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout
    expected = re.search(r"`pytest` ends with `(\d+ passed)`", GUIDE)
    assert expected and expected.group(1) in result.stdout.splitlines()[-1]


def test_4_check_prints_what_the_guide_shows(project: tuple[Path, Path]) -> None:
    _, site = project
    words = command("base-runner check --challenge")
    result = run_cli(*words[1:], sites=[site])
    assert result.returncode == 0, result.stdout + result.stderr
    shown = next(block for block in blocks("text") if block.startswith("PASS load"))
    assert result.stdout == shown


def test_5_serve_answers_the_guides_requests(project: tuple[Path, Path], tmp_path: Path, server) -> None:
    _, site = project
    variable, *words = command("CHALLENGE_SHARED_TOKEN=")
    assert words[:4] == ["base-runner", "serve", "--challenge", SLUG] and "--data-dir" in words
    token = variable.partition("=")[2]
    served = server(["--challenge", SLUG, "--data-dir", str(tmp_path)], [site], CHALLENGE_SHARED_TOKEN=token)
    post = next(line for block in blocks("sh") for line in block.splitlines() if "-X POST" in line)
    request = re.fullmatch(r"curl -X POST localhost:8000(\S+) ((?:-H '[^']*' )+)-d '(.*)'", post.strip())
    assert request, post
    path, headers, body = request.groups()
    sent = dict(header.split(": ", 1) for header in re.findall(r"-H '([^']*)'", headers))
    with served.client() as client:
        assert client.get("/health").json()["status"] == "ok"
        submitted = client.post(path, content=body, headers=sent)
        assert submitted.status_code == 201, submitted.text
        # Scored by its job, which the runner runs in the background at once.
        weights = eventually(lambda: client.get("/weights").json()["weights"], "the submission's job")
        assert weights == {"5F...": 3.0}
        # The hotkey is the master's word: without its token the same request is refused.
        del sent["Authorization"]
        assert client.post(path, content=body, headers=sent).json()["code"] == "missing_token"
    assert served.stop() == 0


def test_7_the_image_builds_on_the_published_runner_image(project: tuple[Path, Path], tmp_path: Path) -> None:
    folder, _ = project
    words = command("rm -rf dist && python -m pip wheel")
    wheel = words[words.index("wheel") :]
    result = subprocess.run(
        [sys.executable, "-m", "pip", *wheel, "--no-build-isolation", "--quiet"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (folder / "dist").iterdir()] == ["bounty_hunt_challenge-0.1.0-py3-none-any.whl"]
    dockerfile = (folder / "Dockerfile").read_text()
    assert f"ARG RUNNER_IMAGE={release.image()}\nFROM ${{RUNNER_IMAGE}}" in dockerfile
    assert "COPY dist/*.whl" in dockerfile
    # Building it needs a registry to pull the runner image from: the image tests build the
    # same recipe on a local base instead (tests/test_image.py).


def test_7_ci_tests_with_the_release_tag_and_pushes_the_image(project: tuple[Path, Path]) -> None:
    folder, _ = project
    workflow = (folder / ".github" / "workflows" / "ci.yml").read_text()
    assert f'RUNNER_REQUIREMENT: "{release.requirement(source="git")}"' in workflow
    assert f'RUNNER_IMAGE: "{release.image()}"' in workflow
    assert "images: ghcr.io/${{ github.repository }}" in workflow and "packages: write" in workflow
    assert f"base-runner check --challenge {SLUG}" in workflow
    assert "git tag v0.2.0 && git push origin main v0.2.0" in GUIDE
