"""``base-runner new``: the generated package installs for real, passes its own tests, lints, checks and serves."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, SERVE_TOKEN, clean_env, eventually, install, run_cli

from base_runner._authoring.scaffold import MAX_SLUG, TEMPLATES

SLUG = "bounty-hunt"
MODULE = "bounty_hunt_challenge"
#: What the master's bridge sends with a submission it verified.
BRIDGE = {"Authorization": f"Bearer {SERVE_TOKEN}", "X-Base-Challenge-Slug": SLUG, "X-Base-Verified-Hotkey": "5Miner"}
BIN = Path(sys.executable).parent
FILES = {
    ".dockerignore",
    ".github/workflows/ci.yml",
    ".gitignore",
    "Dockerfile",
    "README.md",
    "pyproject.toml",
    f"{MODULE}/__init__.py",
    f"{MODULE}/evaluation.py",
    f"{MODULE}/models.py",
    f"{MODULE}/plugin.py",
    f"{MODULE}/routes.py",
    "tests/conftest.py",
    "tests/test_challenge.py",
}


@dataclass
class Generated:
    project: Path
    #: The folder the package is pip-installed into, for processes that put it on PYTHONPATH.
    site: Path


def tool(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a linter the test extra installs next to this interpreter."""
    return subprocess.run([str(BIN / name), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    root = tmp_path_factory.mktemp("new")
    project = root / SLUG
    result = run_cli("new", SLUG, "--dir", str(project))
    assert result.returncode == 0, result.stderr
    site = install(project, root / "site")
    return Generated(project, site)


def test_generates_a_complete_package(generated: Generated) -> None:
    written = {str(p.relative_to(generated.project)) for p in generated.project.rglob("*") if p.is_file()}
    assert written >= FILES
    assert not [p for p in FILES if "@@" in (generated.project / p).read_text()]
    pyproject = tomllib.loads((generated.project / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["base_runner"] == {SLUG: f"{MODULE}.plugin"}
    assert pyproject["project"]["dependencies"][0].startswith("base-runner")
    dev = " ".join(pyproject["project"]["optional-dependencies"]["dev"])
    assert "base-runner[testing]" in dev and "pytest" in dev and "ruff" in dev


def test_its_own_tests_pass(generated: Generated, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t")],
        cwd=generated.project,
        env=clean_env([generated.site]),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 passed" in result.stdout


def test_ruff_is_clean(generated: Generated) -> None:
    for args in (["check", "--no-cache"], ["format", "--check", "--no-cache"]):
        result = tool("ruff", *args, cwd=generated.project)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_workflow_is_actionlint_clean(generated: Generated) -> None:
    workflow = generated.project / ".github" / "workflows" / "ci.yml"
    # With shellcheck given, actionlint also checks the scripts of `run:` steps.
    result = tool("actionlint", "-shellcheck", str(BIN / "shellcheck"), str(workflow), cwd=generated.project)
    assert result.returncode == 0, result.stdout + result.stderr
    text = workflow.read_text()
    for expected in (
        'tags: ["v*"]',
        "packages: write",
        "secrets.GITHUB_TOKEN",
        "docker/metadata-action",
        "type=sha",
        "push: ${{ github.event_name != 'pull_request' }}",
        "ruff format --check",
    ):
        assert expected in text


def test_the_dockerfile_is_hadolint_clean(generated: Generated) -> None:
    result = tool("hadolint", "--no-color", "Dockerfile", cwd=generated.project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_check_passes(generated: Generated) -> None:
    result = run_cli("check", "--challenge", SLUG, sites=[generated.site])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == f"{SLUG}: every check passed"


def test_the_commented_worker_runs_once_uncommented(generated: Generated, tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(generated.project / MODULE, source / MODULE)
    plugin = source / MODULE / "plugin.py"
    text = plugin.read_text()
    code, marker, comment = text.partition("# import asyncio")
    assert marker, "plugin.py has no commented worker"
    uncommented = [line[2:] if line.startswith("# ") else "" for line in (marker + comment).splitlines()]
    plugin.write_text(code + "\n".join(uncommented))
    # The copy comes first on the path; the installed site still provides the entry point.
    result = run_cli("check", "--challenge", SLUG, sites=[source, generated.site])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0].endswith("hooks: get_weights, lifespan, register_routers, register_tasks")


def test_serves(generated: Generated, tmp_path: Path, server) -> None:
    served = server(["--challenge", SLUG, "--data-dir", str(tmp_path)], [generated.site])
    with served.client() as client:
        health = client.get("/health").json()
        assert (health["status"], health["slug"], health["version"]) == ("ok", SLUG, "0.1.0")
        submitted = client.post("/internal/v1/bridge/submissions", json={"answer": "a b c a"}, headers=BRIDGE)
        assert submitted.status_code == 201
        # The runner runs the submission's job in the background, at once.
        weights = eventually(lambda: client.get("/weights").json()["weights"], "the submission's job")
        assert weights == {"5Miner": 3.0}


def test_default_folder_is_the_slug(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "base-runner"), "new", "a1-b2"], cwd=tmp_path, env=clean_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "a1-b2" / "a1_b2_challenge" / "plugin.py").is_file()
    # A slug that starts with a digit still gets a package name Python can import.
    assert run_cli("new", "7up", "--dir", str(tmp_path / "7up")).returncode == 0
    assert (tmp_path / "7up" / "challenge_7up" / "plugin.py").is_file()


def _slug(length: int) -> str:
    # Dashes too: each becomes an underscore in the module and the table prefix.
    stem = ("bounty-hunt-" * 8)[:length].rstrip("-")
    return stem + "x" * (length - len(stem))


@pytest.mark.parametrize("length", [1, 15, 16, 17, 40, MAX_SLUG])
def test_any_slug_length_lints_clean(tmp_path: Path, length: int) -> None:
    slug = _slug(length)
    assert len(slug) == length
    result = run_cli("new", slug, "--dir", str(tmp_path / "p"))
    assert result.returncode == 0, result.stderr
    for args in (["check", "--no-cache"], ["format", "--check", "--no-cache"]):
        linted = tool("ruff", *args, cwd=tmp_path / "p")
        assert linted.returncode == 0, f"{slug}: " + linted.stdout + linted.stderr


def test_a_slug_too_long_for_a_service_name_writes_nothing(tmp_path: Path) -> None:
    slug = _slug(MAX_SLUG + 1)
    result = run_cli("new", slug, "--dir", str(tmp_path / "p"))
    assert result.returncode == 2
    assert result.stderr == (
        f"base-runner: error: challenge slug {slug!r} has {MAX_SLUG + 1} characters; at most {MAX_SLUG} fit "
        "in BASE's service name challenge-<slug>; nothing was written\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("slug", ["Bounty", "bounty_hunt", "bounty--hunt", "bounty-", "-bounty", "bounty hunt", ""])
def test_a_bad_slug_writes_nothing(tmp_path: Path, slug: str) -> None:
    result = run_cli("new", "--dir", str(tmp_path / "out"), "--", slug)
    assert result.returncode == 2
    assert result.stderr == (
        f"base-runner: error: challenge slug {slug!r} is not lowercase letters, digits and single dashes "
        "(for example bounty-hunt); nothing was written\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_is_not_empty_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = run_cli("new", SLUG, "--dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr == (
        f"base-runner: error: {tmp_path} is not empty; choose an empty or new folder with --dir; nothing was written\n"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    # An empty folder is fine.
    (tmp_path / "empty").mkdir()
    assert run_cli("new", SLUG, "--dir", str(tmp_path / "empty")).returncode == 0


def test_the_wheel_ships_every_template(tmp_path: Path) -> None:
    # A copy of the source: building in place would leave build/ in the tree.
    source = tmp_path / "source"
    shutil.copytree(ROOT / "base_runner", source / "base_runner", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--wheel-dir",
            str(tmp_path),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("base_runner-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    templates = {f"base_runner/_authoring/templates/new/{p.relative_to(TEMPLATES)}" for p in TEMPLATES.rglob("*.tmpl")}
    assert len(templates) == len(FILES) and templates <= shipped
