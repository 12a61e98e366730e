"""The release an author upgrades to says what changed: CHANGELOG.md has this version, breaking changes first,
each with its fix, and every doc that pins the runner pins this version."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT

from base_runner._authoring import release

CHANGELOG = ROOT / "CHANGELOG.md"
_SECTION = re.compile(r"^## \[(?P<version>[^\]]+)\](?: - (?P<date>\S+))?$", re.MULTILINE)


def sections() -> dict[str, str]:
    """Each release's section of the changelog, by version, in the file's order."""
    text = CHANGELOG.read_text()
    heads = list(_SECTION.finditer(text))
    ends = [m.start() for m in heads[1:]] + [len(text)]
    return {m["version"]: text[m.end() : end] for m, end in zip(heads, ends, strict=True)}


def test_the_changelog_has_an_entry_for_this_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert version == release.release_version(), "reinstall the checkout: the installed version is not pyproject's"
    found = sections()
    assert version in found, f"CHANGELOG.md has no '## [{version}]' section for the version in pyproject.toml"
    assert list(found)[0] == version, "the newest section is not the current version's"
    assert re.search(r"^- ", found[version], re.MULTILINE), f"the [{version}] section lists no change"


def test_breaking_changes_come_first_each_with_its_fix() -> None:
    for version, body in sections().items():
        kinds = re.findall(r"^### (.+)$", body, re.MULTILINE)
        if "Breaking" in kinds:
            assert kinds[0] == "Breaking", f"[{version}]: breaking changes are not first"
            breaking = body.split("### Breaking", 1)[1].split("\n### ", 1)[0]
            entries = re.split(r"^- ", breaking, flags=re.MULTILINE)[1:]
            assert entries, f"[{version}]: an empty Breaking section"
            for entry in entries:
                assert "**Fix:**" in entry, f"[{version}]: a breaking change without its fix: {entry[:80]!r}"


_PINS = [
    re.compile(re.escape(release.IMAGE) + r":(\d+\.\d+\.\d+)"),
    re.compile(re.escape(release.PACKAGE) + r"(?:\[[a-z,]+\])?==(\d+\.\d+\.\d+)"),
]
PINNING = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "examples" / "challenge.Dockerfile"]


@pytest.mark.parametrize("path", PINNING, ids=[str(p.relative_to(ROOT)) for p in PINNING])
def test_docs_pin_this_version(path: Path) -> None:
    pinned = {version for pattern in _PINS for version in pattern.findall(path.read_text())}
    assert pinned <= {release.release_version()}, f"{path.name} pins {sorted(pinned)}"
