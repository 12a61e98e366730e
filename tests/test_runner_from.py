"""``base-runner new --runner-from pypi|git|PATH``: the generated CI installs the runner from where it says.

Each variant's ``ci.yml`` is linted, and its test job's steps are run as written, in a fresh
virtual environment, with no network: PyPI is a folder holding the runner's wheel, the release's
git tag a local repository git is pointed at (``url.<local>.insteadOf``), the checkout a copy of
this one. The tools the package's ``dev`` extra would fetch (pytest, ruff, httpx, ...) come from
this test's environment, as pip would have installed them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, clean_env, run_cli

from base_runner._authoring import release

SLUG = "bounty-hunt"
BIN = Path(sys.executable).parent
VERSION = release.release_version()
#: What a copy of the runner's checkout leaves out: what git does not track.
UNTRACKED = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", ".*cache")


def new(folder: Path, *options: str) -> Path:
    package = folder / SLUG
    result = run_cli("new", SLUG, "--dir", str(package), *options)
    assert result.returncode == 0, result.stderr
    return package


def workflow(package: Path) -> dict:
    return yaml.safe_load((package / ".github" / "workflows" / "ci.yml").read_text())


def test_each_source_is_its_install_line_in_ci_and_readme(tmp_path: Path) -> None:
    checkout = tmp_path / "base-runner"
    shutil.copytree(ROOT, checkout, ignore=UNTRACKED)
    expected = {
        "pypi": f"base-runner[testing]=={VERSION}",
        "git": f"base-runner[testing] @ git+https://github.com/base-runner/base-runner@v{VERSION}",
        str(checkout): "../base-runner[testing]",
    }
    for n, (source, requirement) in enumerate(expected.items()):
        # The checkout's package beside it, as the guide lays them out.
        folder = tmp_path if source == str(checkout) else tmp_path / str(n)
        package = new(folder) if source == "git" else new(folder, "--runner-from", source)
        assert workflow(package)["env"]["RUNNER_REQUIREMENT"] == requirement
        assert f"pip install '{requirement}'\n" in (package / "README.md").read_text()
        linted = subprocess.run(
            [str(BIN / "actionlint"), "-shellcheck", str(BIN / "shellcheck"), ".github/workflows/ci.yml"],
            cwd=package,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert linted.returncode == 0, linted.stdout + linted.stderr


def test_a_checkout_outside_the_package_is_named_in_a_note(tmp_path: Path) -> None:
    checkout = tmp_path / "base-runner"
    shutil.copytree(ROOT, checkout, ignore=UNTRACKED)
    result = run_cli("new", SLUG, "--dir", str(tmp_path / SLUG), "--runner-from", str(checkout))
    assert result.returncode == 0, result.stderr
    assert "pip install '../base-runner[testing]'" in result.stdout
    assert "note: .github/workflows/ci.yml installs base-runner from ../base-runner, outside the package" in (
        result.stdout
    )


@pytest.mark.parametrize("source", ["nowhere", "plugins/example"])
def test_a_folder_that_is_no_runner_checkout_writes_nothing(tmp_path: Path, source: str) -> None:
    result = run_cli("new", SLUG, "--dir", str(tmp_path / "p"), "--runner-from", str(ROOT / source))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "is not a base-runner checkout" in line and line.endswith("nothing was written")
    assert not (tmp_path / "p").exists()


def fresh_venv(folder: Path) -> Path:
    """A virtual environment without base-runner that sees this test's other packages behind its own, pip too."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # This environment's packages but base-runner (its metadata and its editable install's path).
    others = folder / "others"
    others.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if "base_runner" not in entry.name:
            (others / entry.name).symlink_to(entry)
    (Path(site) / "_others.pth").write_text(f"import site; site.addsitedir({str(others)!r})\n")
    # The dev extra's tools, found installed, get no scripts here: these stand for them.
    (folder / "bin" / "pytest").write_text(f"#!{python}\nimport sys, pytest\nsys.exit(pytest.console_main())\n")
    (folder / "bin" / "pytest").chmod(0o755)
    (folder / "bin" / "ruff").symlink_to(BIN / "ruff")
    return folder


def run_test_job(package: Path, venv: Path, **env: str) -> list[subprocess.CompletedProcess[str]]:
    """Every ``run:`` step of the workflow's test job, as written, in ``package``; stops at the first failure."""
    flow = workflow(package)
    environment = clean_env(
        [],
        **{k: str(v) for k, v in flow["env"].items()},
        PATH=f"{venv / 'bin'}:/usr/bin:/bin",
        VIRTUAL_ENV=str(venv),
        # No index: nothing may come from the network.
        PIP_NO_INDEX="1",
        PIP_NO_BUILD_ISOLATION="0",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        **env,
    )
    environment.pop("PYTHONPATH")
    done = []
    for step in flow["jobs"]["test"]["steps"]:
        if "run" not in step:
            continue
        result = subprocess.run(
            ["bash", "-e", "-c", step["run"]], cwd=package, env=environment, capture_output=True, text=True, timeout=600
        )
        done.append(result)
        assert result.returncode == 0, f"{step.get('name', step['run'])}:\n{result.stdout}\n{result.stderr}"
    return done


def installed_from(venv: Path) -> str:
    """Where the venv imports base_runner from."""
    return subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import base_runner; print(base_runner.__file__)"],
        cwd=venv,
        env=clean_env([]),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_a_checkout_ci_job_passes_end_to_end(tmp_path: Path) -> None:
    checkout = tmp_path / "base-runner"
    shutil.copytree(ROOT, checkout, ignore=UNTRACKED)
    before = sorted(p.relative_to(checkout) for p in checkout.rglob("*"))
    package = new(tmp_path, "--runner-from", str(checkout))
    venv = fresh_venv(tmp_path / "venv")
    steps = run_test_job(package, venv)
    assert [s.args[-1] for s in steps][-1] == f"base-runner check --challenge {SLUG}"
    assert " passed in " in steps[-2].stdout, steps[-2].stdout  # pytest
    assert steps[-1].stdout.splitlines()[-1] == f"{SLUG}: every check passed"
    assert installed_from(venv).startswith(str(venv))
    # Installing the checkout wrote nothing into it.
    assert sorted(p.relative_to(checkout) for p in checkout.rglob("*")) == before


def test_a_git_tag_ci_job_installs_the_tagged_release(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    shutil.copytree(ROOT, repository, ignore=UNTRACKED)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "release"], ["tag", f"v{VERSION}"]):
        subprocess.run([*git, *args], cwd=repository, check=True, capture_output=True, timeout=120)
    package = new(tmp_path)
    venv = fresh_venv(tmp_path / "venv")
    # git fetches the URL in ci.yml, unchanged, from the local repository.
    steps = run_test_job(
        package,
        venv,
        GIT_CONFIG_COUNT="1",
        GIT_CONFIG_KEY_0=f"url.{repository.as_uri()}.insteadOf",
        GIT_CONFIG_VALUE_0=release.REPOSITORY,
    )
    assert f"git+{release.REPOSITORY}@v{VERSION}" in steps[0].stdout + steps[0].stderr
    assert steps[-1].stdout.splitlines()[-1] == f"{SLUG}: every check passed"
    assert installed_from(venv).startswith(str(venv))


def test_a_pypi_ci_job_installs_the_published_wheel(tmp_path: Path) -> None:
    wheels = tmp_path / "index"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    package = new(tmp_path, "--runner-from", "pypi")
    venv = fresh_venv(tmp_path / "venv")
    steps = run_test_job(package, venv, PIP_FIND_LINKS=str(wheels))
    assert f"base_runner-{VERSION}-py3-none-any.whl" in os.listdir(wheels)
    assert steps[-1].stdout.splitlines()[-1] == f"{SLUG}: every check passed"
    assert installed_from(venv).startswith(str(venv))
