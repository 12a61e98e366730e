"""The release path: one place names the published package and image, and everything agrees with it."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT, install, run_cli

from base_runner._authoring import release

WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
#: What authors read or get: every runner image or package they are told to use must be the published one.
READ = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "examples" / "challenge.Dockerfile",
    *sorted((ROOT / "base_runner" / "_authoring" / "templates").rglob("*.tmpl")),
    WORKFLOW,
]
_IMAGE = re.compile(r"ghcr\.io/[A-Za-z0-9_.<>-]+/base-runner\b")


def test_the_release_workflow_publishes_what_release_py_names() -> None:
    text = WORKFLOW.read_text()
    for expected in (
        'tags: ["v*"]',
        "python -m build",
        "twine check --strict dist/*",
        "pypa/gh-action-pypi-publish@release/v1",
        "id-token: write",
        "packages: write",
        f"images: {release.IMAGE}",
        "type=semver,pattern={{version}}",
        "type=semver,pattern={{major}}.{{minor}}",
        "type=raw,value=latest",
        "sbom: true",
        "provenance: mode=max",
        "actions/attest-build-provenance",
        f"subject-name: {release.IMAGE}",
        f"url: https://pypi.org/project/{release.PACKAGE}/",
    ):
        assert expected in text, expected
    # The wheel the tag check looks for is the one this pyproject.toml builds.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == release.PACKAGE
    assert "dist/base_runner-${version}-py3-none-any.whl" in text


@pytest.mark.parametrize("path", READ, ids=[str(p.relative_to(ROOT)) for p in READ])
def test_docs_and_templates_name_the_published_runner(path: Path) -> None:
    text = path.read_text()
    assert "<org>" not in text and "your-org" not in text
    assert {match for match in _IMAGE.findall(text)} <= {release.IMAGE}
    # A git URL only of the runner's own repository, pinned to a release's tag.
    pinned = re.compile(re.escape(f"git+{release.REPOSITORY}@v") + r"\d+\.\d+\.\d+\b")
    assert not re.findall(r"git\+[a-z]+://\S+", pinned.sub("", text))


def test_new_writes_the_published_names() -> None:
    from base_runner._authoring.scaffold import Names, render

    files = {str(path): text for path, text in render(Names.of("bounty-hunt")).items()}
    tag = release.image()
    assert f"ARG RUNNER_IMAGE={tag}" in files["Dockerfile"]
    assert f'RUNNER_IMAGE: "{tag}"' in files[".github/workflows/ci.yml"]
    assert f'RUNNER_REQUIREMENT: "{release.requirement(source="git")}"' in files[".github/workflows/ci.yml"]
    assert f'dependencies = ["{release.PACKAGE}>={release.release_version()}"]' in files["pyproject.toml"]
    assert f"({release.REPOSITORY})" in files["README.md"]


def test_new_builds_on_a_fork_or_a_pinned_release(tmp_path: Path) -> None:
    result = run_cli(
        "new",
        "bounty-hunt",
        "--dir",
        str(tmp_path / "p"),
        "--runner-image",
        "ghcr.io/a-fork/base-runner",
        "--runner-version",
        "0.3.1",
    )
    assert result.returncode == 0, result.stderr
    assert "ARG RUNNER_IMAGE=ghcr.io/a-fork/base-runner:0.3.1" in (tmp_path / "p" / "Dockerfile").read_text()
    workflow = (tmp_path / "p" / ".github" / "workflows" / "ci.yml").read_text()
    assert 'RUNNER_IMAGE: "ghcr.io/a-fork/base-runner:0.3.1"' in workflow
    assert f'"{release.requirement("0.3.1", "git")}"' in workflow
    assert f'"{release.PACKAGE}>=0.3.1"' in (tmp_path / "p" / "pyproject.toml").read_text()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--runner-image", "ghcr.io/a-fork/base-runner:0.3.1", "is not an image name without a tag"),
        ("--runner-version", "latest", "is not a version like 0.1.0"),
    ],
)
def test_a_bad_runner_option_writes_nothing(tmp_path: Path, option: str, value: str, message: str) -> None:
    result = run_cli("new", "bounty-hunt", "--dir", str(tmp_path / "p"), option, value)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert message in line and line.endswith("nothing was written")
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("project", [".", "plugins/example", "plugins/bounty"])
def test_installing_a_checkout_writes_nothing_into_it(tmp_path: Path, project: str) -> None:
    # The README's quick start installs the runner and plugins/example from the checkout.
    checkout = tmp_path / "checkout"
    shutil.copytree(
        ROOT / project,
        checkout,
        ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", ".*cache"),
    )
    before = sorted(p.relative_to(checkout) for p in checkout.rglob("*"))
    install(checkout, tmp_path / "site")
    assert sorted(p.relative_to(checkout) for p in checkout.rglob("*")) == before
    installed = {"plugins/example": "example_challenge/plugin.py", "plugins/bounty": "bounty_challenge/plugin.py"}
    for path in (
        [installed[project]] if project in installed else ["base_runner/_authoring/release.py", "base_runner/py.typed"]
    ):
        assert (tmp_path / "site" / path).is_file(), path
