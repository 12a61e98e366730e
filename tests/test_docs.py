"""The author guide stays true to the code: every hook and every fixture is documented, by its name."""

from __future__ import annotations

import inspect
import re

import pytest
from conftest import ROOT

from base_runner import hookspecs, testing
from base_runner._plugins.plugins import HOOK_NAMES

GUIDE = (ROOT / "docs" / "authoring.md").read_text()


def headings(section: str) -> set[str]:
    """The ``### `...` `` headings of one ``## `` section of the guide."""
    body = GUIDE.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^### `(.+)`$", body, re.MULTILINE))


def test_every_hook_is_documented_with_its_parameters() -> None:
    specs = {name: inspect.signature(getattr(hookspecs, name)).parameters for name in HOOK_NAMES}
    assert headings("Hook reference") == {f"{name}({', '.join(params)})" for name, params in specs.items()}


def test_every_fixture_and_helper_is_documented() -> None:
    # How a fixture function is marked: pytest >= 8.4, and before.
    markers = ("_fixture_function_marker", "_pytestfixturefunction")
    fixtures = {name for name, value in vars(testing).items() if any(hasattr(value, m) for m in markers)}
    assert fixtures, "no fixture found in base_runner.testing"
    assert headings("Test fixtures") == fixtures | {"assert_valid_weights(weights)"}


@pytest.mark.parametrize("command", ["new", "check", "serve", "weights", "plugins"])
def test_every_command_is_in_the_table(command: str) -> None:
    assert f"| `base-runner {command}" in GUIDE


@pytest.mark.parametrize("document", ["README.md", "docs/operating.md"])
def test_every_runner_setting_is_documented(document: str) -> None:
    from base_runner._core.settings import RunnerSettings

    text = (ROOT / document).read_text()
    missing = [
        f"CHALLENGE_{name.upper()}" for name in RunnerSettings.model_fields if f"`CHALLENGE_{name.upper()}`" not in text
    ]
    assert missing == [], f"{document} does not document {', '.join(missing)}"


def test_the_image_tests_skip_when_asked(tmp_path) -> None:
    import os
    import subprocess
    import sys

    from conftest import SKIP_IMAGE_TESTS

    assert f"{SKIP_IMAGE_TESTS}=1 pytest" in (ROOT / "README.md").read_text()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_image.py"],
        cwd=ROOT,
        env={**os.environ, SKIP_IMAGE_TESTS: "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout
    assert f"{SKIP_IMAGE_TESTS} is set" in result.stdout and " passed" not in result.stdout
