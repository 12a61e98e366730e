"""Discovery, selection and load errors, through the real CLI and real installed packages."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import PACKAGES, ROOT, SITES_FROM, clean_env, install, linked_venv, run_cli


@pytest.fixture
def data(tmp_path: Path) -> str:
    (tmp_path / "data").mkdir()
    return str(tmp_path / "data")


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    return lines[0]


def test_no_challenge_installed(data: str) -> None:
    result = run_cli("weights", "--data-dir", data, sites=[])
    assert result.returncode == 2
    assert "no challenge is installed" in one_line(result.stderr)


def test_the_only_installed_challenge_is_selected(sites: dict[str, Path], data: str) -> None:
    result = run_cli("weights", "--data-dir", data, sites=[sites["example"]])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["challenge_slug"] == "example"


def test_several_installed_and_none_selected(sites: dict[str, Path], data: str) -> None:
    result = run_cli("weights", "--data-dir", data, sites=[sites["example"], sites["testbed"]])
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "choose one with --challenge or BASE_CHALLENGE_SLUG" in line
    assert "example (example-challenge 0.1.0)" in line and "lab (runner-testbed 2.5.0)" in line


def test_unknown_name_lists_what_is_installed(sites: dict[str, Path], data: str) -> None:
    result = run_cli("weights", "--challenge", "nope", "--data-dir", data, sites=[sites["example"]])
    assert result.returncode == 2
    assert one_line(result.stderr) == (
        "base-runner: error: no challenge named 'nope' is installed; installed: example (example-challenge 0.1.0)"
    )


def test_slug_variable_selects(sites: dict[str, Path], data: str) -> None:
    result = run_cli(
        "weights", "--data-dir", data, sites=[sites["example"], sites["testbed"]], BASE_CHALLENGE_SLUG="lab"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["weights"] == {"5Lab": 1.0}


def test_option_wins_over_slug_variable(sites: dict[str, Path], data: str) -> None:
    result = run_cli(
        "weights",
        "--challenge",
        "example",
        "--data-dir",
        data,
        sites=[sites["example"], sites["testbed"]],
        BASE_CHALLENGE_SLUG="lab",
    )
    assert json.loads(result.stdout)["challenge_slug"] == "example"


def test_two_distributions_claiming_one_slug(sites: dict[str, Path], data: str) -> None:
    result = run_cli("weights", "--challenge", "example", "--data-dir", data, sites=[sites["example"], sites["twin"]])
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "provided by several distributions" in line and "twin-challenge" in line and "example-challenge" in line


def test_broken_plugin_that_is_not_selected_does_not_matter(sites: dict[str, Path], data: str) -> None:
    # broken-import lives in the same distribution as lab.
    result = run_cli("weights", "--challenge", "lab", "--data-dir", data, sites=[sites["testbed"]])
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "broken-import",
            "importing runner_testbed.broken_import failed: ModuleNotFoundError: No module named "
            "'a_module_that_does_not_exist'; the module 'a_module_that_does_not_exist' is not installed: "
            "add the package that provides it to the challenge's dependencies",
        ),
        ("no-weights", "runner_testbed.no_weights has no get_weights hook"),
        (
            "async-lifespan",
            "the hook lifespan is async def; write it as `def lifespan(app)` (not async def), returning an "
            "async context manager or None",
        ),
        (
            "wrong-params",
            "the hook lifespan(application) takes application, which the hook does not pass; "
            "write it as `def lifespan(app)`",
        ),
        ("bad-hook", "get_weight"),
    ],
)
def test_plugin_that_does_not_load(sites: dict[str, Path], data: str, name: str, expected: str) -> None:
    result = run_cli("weights", "--challenge", name, "--data-dir", data, sites=[sites["testbed"]])
    assert result.returncode == 3
    line = one_line(result.stderr)
    assert line.startswith(f"base-runner: error: challenge {name} (runner-testbed 2.5.0): ")
    assert expected in line


def test_unknown_hook_names_the_real_hooks(sites: dict[str, Path], data: str) -> None:
    result = run_cli("weights", "--challenge", "bad-hook", "--data-dir", data, sites=[sites["testbed"]])
    assert "the hooks are: get_weights, lifespan, register_routers" in result.stderr


def test_traceback_only_with_debug(sites: dict[str, Path], data: str) -> None:
    args = ("weights", "--challenge", "broken-import", "--data-dir", data)
    assert "Traceback" not in run_cli(*args, sites=[sites["testbed"]]).stderr
    debug = run_cli(*args, "--debug", sites=[sites["testbed"]])
    assert debug.returncode == 3
    assert "Traceback" in debug.stderr and "a_module_that_does_not_exist" in debug.stderr


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("reserved-route", "a router claims /internal/v1/get_weights, which the runner serves"),
        ("not-a-router", "register_routers returned str, not an APIRouter"),
    ],
)
def test_bad_routers_stop_serve(sites: dict[str, Path], data: str, name: str, expected: str) -> None:
    result = run_cli("serve", "--challenge", name, "--data-dir", data, "--port", "0", sites=[sites["testbed"]])
    assert result.returncode == 3
    assert expected in one_line(result.stderr)


def test_plugins_lists_every_challenge_and_whether_it_loads(sites: dict[str, Path]) -> None:
    # A process per challenge, two at a time on 2 cores: a minute on a loaded machine.
    result = run_cli("plugins", "--json", sites=[sites["example"], sites["testbed"]], timeout=300)
    assert result.returncode == 3, "a broken challenge is a failure, as it is for serve"
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["example"] == {
        "name": "example",
        "distribution": "example-challenge",
        "version": "0.1.0",
        "module": "example_challenge.plugin",
        "loads": True,
        "error": None,
        "hooks": ["get_weights", "register_routers"],
    }
    assert rows["lab"]["loads"] and rows["lab"]["distribution"] == "runner-testbed"
    assert not rows["broken-import"]["loads"]
    assert "a_module_that_does_not_exist" in rows["broken-import"]["error"]
    assert not rows["no-weights"]["loads"] and not rows["bad-hook"]["loads"]


def test_plugins_table(sites: dict[str, Path]) -> None:
    result = run_cli("plugins", sites=[sites["example"]])
    assert result.returncode == 0
    assert result.stdout.strip() == (
        "example  example-challenge 0.1.0  example_challenge.plugin  loads (get_weights, register_routers)"
    )
    assert run_cli("plugins", sites=[]).stdout.strip() == "no challenge is installed"


def test_a_challenge_installed_in_the_test_environment_changes_no_result(
    sites: dict[str, Path], tmp_path: Path
) -> None:
    # The README's two commands in one clone: the example is installed where pytest runs.
    python, site = linked_venv(tmp_path / "venv")
    # From a copy: pip builds in the package's folder, which tests beside this one (pytest -n) read.
    ignore = shutil.ignore_patterns("build", "*.egg-info")
    install(Path(shutil.copytree(PACKAGES["example"], tmp_path / "example", ignore=ignore)), site)
    result = subprocess.run(
        [
            str(python),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--basetemp",
            str(tmp_path / "t"),
            f"{Path(__file__)}::test_no_challenge_installed",
            f"{Path(__file__)}::test_plugins_table",
        ],
        cwd=ROOT,
        # The packages this run installed: the nested run would install them all again.
        env={**clean_env(), SITES_FROM: str(sites["example"].parent)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_a_file_upload_route_loads_and_takes_a_file(sites: dict[str, Path], tmp_path: Path, server) -> None:
    # FastAPI's form and file parameters need python-multipart, which base-runner ships.
    served = server(["--challenge", "uploads", "--data-dir", str(tmp_path)], [sites["testbed"]])
    with served.client() as client:
        response = client.post("/artifacts", data={"hotkey": "5Up"}, files={"artifact": ("a.bin", b"\x00artifact")})
    assert response.status_code == 201, response.text
    assert response.json() == {"hotkey": "5Up", "size": 9}
    assert (tmp_path / "artifacts" / "5Up.bin").read_bytes() == b"\x00artifact"
