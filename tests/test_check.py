"""``base-runner check``: the contract checks an author runs before publishing, passing and failing."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli

from base_runner.plugins import HOOK_SHAPES

CHECKS = ["load", "routes", "tables", "startup", "get_weights", "readiness gate", "master weights", "shutdown"]


def test_a_good_challenge_passes_every_check_and_leaves_nothing_behind(sites: dict[str, Path], tmp_path: Path) -> None:
    # TMPDIR is where the check makes its data dir: it must be empty again afterwards.
    result = run_cli(
        "check",
        sites=[sites["example"], sites["testbed"]],
        TMPDIR=str(tmp_path),
        BASE_CHALLENGE_SLUG="example",
        # The check uses a database of its own, never the one configured.
        CHALLENGE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'nowhere' / 'x.sqlite3'}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.partition(":")[0] for line in lines[:-1]] == [f"PASS {check}" for check in CHECKS]
    assert lines[0] == "PASS load: example (example-challenge 0.1.0), hooks: get_weights, register_routers"
    assert lines[2] == "PASS tables: created submissions"
    assert lines[-1] == "example: every check passed"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "failed", "reason"),
    [
        (
            "broken-import",
            "load",
            "challenge broken-import (runner-testbed 2.5.0): importing runner_testbed.broken_import failed: "
            "ModuleNotFoundError: No module named 'a_module_that_does_not_exist'; the module "
            "'a_module_that_does_not_exist' is not installed: add the package that provides it to the challenge's "
            "dependencies",
        ),
        (
            "reserved-route",
            "routes",
            "challenge reserved-route (runner-testbed 2.5.0): a router claims /internal/v1/get_weights, which the "
            "runner serves; move the route elsewhere (reserved: /health, /ready, /version, /weights, /internal/...)",
        ),
        ("failing-startup", "startup", "raised RuntimeError: the model file /data/model.bin is missing"),
        (
            "generator-lifespan",
            "startup",
            "raised TypeError: lifespan returned generator, not an async context manager; "
            f"write it as {HOOK_SHAPES['lifespan']}",
        ),
        (
            "bad-weights",
            "get_weights",
            "2 invalid entries, which the runner drops: '5NaN': value is NaN; '5Negative': value is negative",
        ),
    ],
)
def test_a_failing_check_is_one_line_with_the_reason(
    sites: dict[str, Path], tmp_path: Path, name: str, failed: str, reason: str
) -> None:
    result = run_cli("check", "--challenge", name, sites=[sites["testbed"]], TMPDIR=str(tmp_path))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    ran = CHECKS[: CHECKS.index(failed)]
    assert [line.partition(":")[0] for line in lines][: len(ran) + 1] == [f"PASS {c}" for c in ran] + [f"FAIL {failed}"]
    assert [line for line in lines if line.startswith("FAIL")] == [f"FAIL {failed}: {reason}"]
    assert result.stderr.strip().splitlines()[-1] == f"{name}: 1 check(s) failed; fix them before publishing"
    assert "Traceback" not in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_challenge_is_a_selection_error(sites: dict[str, Path]) -> None:
    result = run_cli("check", "--challenge", "nope", sites=[sites["example"]])
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "base-runner: error: no challenge named 'nope' is installed; installed: example (example-challenge 0.1.0)"
    )
