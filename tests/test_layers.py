"""The package's shape: public names at the top, private layers below, the 0.1 paths deprecated."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import base_runner

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "base_runner"

#: The package's layers, lowest first: a module may import its own layer and those before it, never one
#: after. The contract imports nothing of the runner; the storage helpers authors use sit with the storage
#: they wrap; the public facades at the top may import anything. A new folder or module must be placed here.
LAYERS = [
    ("hookspecs",),
    ("_core",),
    ("_storage", "storage"),
    ("_plugins",),
    ("_weights",),
    ("_push",),
    ("_executor",),
    ("_jobs",),
    ("_observe",),
    ("_http",),
    ("_authoring",),
    ("_cli",),
    ("__init__", "__main__", "testing", "jobs", "executor"),
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _imports(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """Each ``base_runner`` module that ``path`` (the module ``module``) imports, with its line."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            # ``from base_runner import x`` names the module x when x is one.
            names = [f"{base}.{alias.name}" if base == "base_runner" else base for alias in node.names]
        else:
            continue
        for name in names:
            if name == "base_runner" or name.startswith("base_runner."):
                yield node.lineno, name


def _layer(module: str) -> str:
    """The layer of ``base_runner.x.y``: ``x``, or ``__init__`` for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_imports_flow_down_the_layers() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        layer = _layer(module)
        assert layer in RANK, f"{path.relative_to(ROOT)}: put its layer {layer!r} in LAYERS"
        for line, imported in _imports(path, module):
            target = _layer(imported)
            if target not in RANK:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {imported} is in no layer")
            elif RANK[target] > RANK[layer] or (RANK[layer] == 0 and target != layer):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {layer} imports {imported}, a layer above it")
    assert wrong == []


def test_the_layer_test_sees_an_import_that_goes_up(tmp_path: Path) -> None:
    module = tmp_path / "pusher.py"
    module.write_text("from .._http.app import create_app\nfrom .. import hookspecs, storage\n")
    assert [_layer(name) for _line, name in _imports(module, "base_runner._push.pusher")] == [
        "_http",
        "hookspecs",
        "storage",
    ]


def test_plugins_and_examples_import_no_private_module() -> None:
    private = []
    sources = [*(ROOT / "plugins").rglob("*.py"), *(ROOT / "tests" / "plugins").rglob("*.py")]
    for path in (path for path in sources if "build" not in path.relative_to(ROOT).parts):
        for line, name in _imports(path, path.stem):
            if any(part.startswith("_") and not part.startswith("__") for part in name.split(".")):
                private.append(f"{path.relative_to(ROOT)}:{line}: {name}")
    templates = [*(PACKAGE / "_authoring" / "templates").rglob("*.tmpl"), *(ROOT / "examples").rglob("*")]
    for path in templates:
        if path.is_file() and "base_runner._" in path.read_text():
            private.append(str(path.relative_to(ROOT)))
    assert private == []


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
