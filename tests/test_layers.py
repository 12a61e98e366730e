"""The package's shape: public names at the top, private layers below, the 0.1 paths deprecated."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import base_runner

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "base_runner"


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, cwd=ROOT)


def test_every_public_name_imports_without_a_warning() -> None:
    names = ", ".join(sorted(set(base_runner.__all__) - {"__version__"}))
    result = _run(f"import warnings; warnings.simplefilter('error'); from base_runner import {names}")
    assert result.returncode == 0, result.stderr


def test_the_type_checkers_see_the_same_public_names_as_the_lazy_loader() -> None:
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    (block,) = [n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]
    seen = {
        alias.asname: "." * node.level + (node.module or alias.name)
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert seen == base_runner._HOMES


@pytest.mark.parametrize(("old", "new"), [("db", "_storage.db"), ("auth", "_core.auth"), ("cli", "_cli.cli")])
def test_a_0_1_module_path_still_imports_with_a_warning_naming_the_new_one(old: str, new: str) -> None:
    result = _run(
        f"import base_runner.{old} as old, base_runner.{new} as new\n"
        f"from base_runner.{old} import __name__ as name\n"
        "assert old is new, (old, new)\n"
        "print(name)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"base_runner.{new}"
    (warning,) = [line for line in result.stderr.splitlines() if "DeprecationWarning" in line]
    assert warning.startswith("<string>:1: DeprecationWarning: ")
    assert f"base_runner.{old} is deprecated" in warning and f"import from base_runner.{new}" in warning


def test_an_unknown_module_is_still_an_import_error() -> None:
    result = _run("import base_runner.nothing_here")
    assert "ModuleNotFoundError: No module named 'base_runner.nothing_here'" in result.stderr
