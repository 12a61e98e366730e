"""What the docs point at exists: every error code they name is one the runner can answer, and every
relative link resolves inside the repository (a clone has nothing beside it)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
from conftest import ROOT

DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
IDS = [str(p.relative_to(ROOT)) for p in DOCS]


def _code_pattern(node: ast.expr) -> str | None:
    """The code a string literal or an f-string can be, as a regex (``f"{kind}_unreadable"``: ``\\w+_unreadable``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return re.escape(node.value)
    if isinstance(node, ast.JoinedStr):
        return "".join(
            re.escape(part.value) if isinstance(part, ast.Constant) else r"[a-z0-9_]+" for part in node.values
        )
    return None


def _is_error_status(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int and 400 <= node.value <= 599


def runner_codes() -> list[re.Pattern[str]]:
    """Every envelope code the runner's source can answer, read from the code itself.

    A code is the string right after an error status in a call or a tuple (``ApiError(409, "conflict", ...)``,
    ``AuthFailure(401, ...)``, ``(507, "disk_full", ...)``), the first argument of ``error_body``, or a value
    of a status-to-code map.
    """
    found: set[str] = set()
    for source in (ROOT / "base_runner").rglob("*.py"):
        tree = ast.parse(source.read_text(), str(source))
        # Names bound to a status-to-code map: their .get(status, default)'s default is a code too.
        maps = {
            target.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Dict)
            and any(key is not None and _is_error_status(key) for key in node.value.keys)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            items: list[ast.expr] = []
            if isinstance(node, ast.Call):
                items = list(node.args)
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if name == "error_body" and items and (pattern := _code_pattern(items[0])):
                    found.add(pattern)
                owner = getattr(func, "value", None)
                if name == "get" and isinstance(owner, ast.Name) and owner.id in maps and len(items) == 2:
                    found.add(_code_pattern(items[1]) or "")
            elif isinstance(node, ast.Tuple):
                items = list(node.elts)
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if key is not None and _is_error_status(key) and (pattern := _code_pattern(value)):
                        found.add(pattern)
            for status, code in zip(items, items[1:], strict=False):
                if _is_error_status(status) and (pattern := _code_pattern(code)):
                    found.add(pattern)
    return [re.compile(pattern) for pattern in sorted(found - {""})]


_SNAKE = r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+"
# "code": "a" | "b" in a JSON snippet; a status then a code (`422 `validation_failed``).
_JSON_CODES = re.compile(r'"code":\s*((?:"[a-z0-9_]+"\s*\|?\s*)+)')
_STATUS_CODE = re.compile(rf"\b[45]\d\d,?\s+`({_SNAKE})`")


def doc_codes(text: str) -> set[str]:
    """The error codes a Markdown text names: in JSON envelopes, after a status, and in a table's `code` column."""
    codes = {code for match in _JSON_CODES.finditer(text) for code in re.findall(r'"([a-z0-9_]+)"', match[1])}
    codes |= set(_STATUS_CODE.findall(text))
    column = None
    for line in text.splitlines():
        if not line.startswith("|"):
            column = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if column is None:
            heads = [cell.strip("`").lower() for cell in cells]
            column = heads.index("code") if "code" in heads else -1
        elif column >= 0 and column < len(cells):
            codes |= set(re.findall(rf"`({_SNAKE})`", cells[column]))
    return codes


def test_the_code_reader_finds_the_runners_codes() -> None:
    patterns = runner_codes()
    for code in (
        "missing_owner_token",
        "validation_failed",
        "body_too_large",
        "disk_full",
        "uncommitted_changes",
        "secret_unreadable",
        "too_many_connections",
        "http_418",
    ):
        assert any(p.fullmatch(code) for p in patterns), code
    assert not any(p.fullmatch("error") or p.fullmatch("no_such_code") for p in patterns)


def test_the_doc_reader_finds_codes_in_each_form() -> None:
    text = (
        'answers `{"code": "a_b" | "c_d", "detail": ...}` and 503 `e_f`, or 422, `g_h`.\n\n'
        "| case | status | `code` |\n|---|---|---|\n| x | 400 | `i_j` |\n\n| a | b |\n|---|---|\n| `k_l` | c |\n"
    )
    assert doc_codes(text) == {"a_b", "c_d", "e_f", "g_h", "i_j"}


def test_the_docs_name_codes() -> None:
    named = set().union(*(doc_codes(path.read_text()) for path in DOCS))
    assert len(named) >= 10, named


@pytest.mark.parametrize("path", DOCS, ids=IDS)
def test_every_error_code_a_doc_names_is_one_the_runner_answers(path: Path) -> None:
    patterns = runner_codes()
    unknown = sorted(code for code in doc_codes(path.read_text()) if not any(p.fullmatch(code) for p in patterns))
    assert unknown == [], f"{path.name} names error codes the runner never answers: {unknown}"


@pytest.mark.parametrize("path", [p for p in DOCS if p.name != "CHANGELOG.md"], ids=IDS[:1] + IDS[2:])
def test_no_doc_shows_the_old_error_shape(path: Path) -> None:
    # 0.1's {"error": ...}: the envelope's key is "code" (CHANGELOG.md says so, and only it may name the old key).
    text = path.read_text()
    assert not re.search(r'\{"error":|\["error"\]|^\|[^\n]*\| `error` \|$', text, re.MULTILINE)


# Inline links and images [text](target "title"), and reference definitions [name]: target.
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def links(text: str) -> Iterator[str]:
    """The link targets of a Markdown text, outside code blocks and code spans."""
    text = re.sub(r"`[^`\n]*`", "", _FENCE.sub("", text))
    for match in _LINK.finditer(text):
        yield match[1] or match[2]


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a document's headings: lowercase, punctuation dropped, spaces to dashes."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", _FENCE.sub("", text), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


LINKED = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.mark.parametrize("path", LINKED, ids=[str(p.relative_to(ROOT)) for p in LINKED])
def test_every_relative_link_resolves_inside_the_repository(path: Path) -> None:
    broken = []
    for target in links(path.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # https:, mailto:: not the repository's
        file, _, anchor = target.partition("#")
        resolved = (path.parent / unquote(file)).resolve() if file else path
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(f"{target} (no such file in the repository)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text()):
            broken.append(f"{target} (no heading with that anchor)")
    assert broken == [], f"{path.relative_to(ROOT)}: {broken}"


def test_the_link_reader_finds_each_form() -> None:
    text = '[a](x.md) ![b](img.svg "t") `[c](code.md)`\n```\n[d](fenced.md)\n```\n[e]: ref.md#part\n'
    assert list(links(text)) == ["x.md", "img.svg", "ref.md#part"]
    assert anchors("# A title: the `x`, y\n## A title: the `x`, y\n") == {"a-title-the-x-y", "a-title-the-x-y-1"}


#: What an author reads: the guide and the SDK reference (docs/authoring.md links to sdk.md, ...).
FOR_AUTHORS = [ROOT / "docs" / "authoring.md", ROOT / "docs" / "sdk.md", ROOT / "docs" / "contract.md"]


@pytest.mark.parametrize("path", FOR_AUTHORS, ids=[p.name for p in FOR_AUTHORS])
def test_author_docs_link_only_to_what_authors_read(path: Path) -> None:
    # The docs, the changelog and the example challenges are written for authors; the runner's own
    # tests lean on its conftest.py and internals, and neither ships in the wheel.
    readable = [ROOT / "docs", ROOT / "plugins", ROOT / "README.md", ROOT / "CHANGELOG.md"]
    elsewhere = []
    for target in links(path.read_text()):
        file = target.partition("#")[0]
        if not file or re.match(r"[a-z][a-z0-9+.-]*:", file, re.IGNORECASE):
            continue
        resolved = (path.parent / unquote(file)).resolve()
        if not any(resolved == place or resolved.is_relative_to(place) for place in readable):
            elsewhere.append(target)
    assert elsewhere == [], f"{path.name} links to files that are not for authors: {elsewhere}"
