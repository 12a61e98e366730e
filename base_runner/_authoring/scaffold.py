"""``base-runner new``: a complete challenge package, from the templates shipped with the runner.

The templates are the files under ``templates/new``, one per file generated,
rendered with :class:`string.Template` and the ``@@`` delimiter (``$`` is taken
by the shell, the Dockerfile and workflow expressions). Their paths map to the
output's: the ``package`` folder becomes the challenge's module, a ``dot-``
prefix becomes ``.`` (setuptools leaves dot files out of package data) and the
``.tmpl`` suffix is dropped.
"""

from __future__ import annotations

import os
import re
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .._core.errors import ConfigError
from . import release

TEMPLATES = Path(__file__).resolve().parent / "templates" / "new"
SUFFIX = ".tmpl"
_SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
#: BASE runs a challenge as the Swarm service ``challenge-<slug>``, and Docker caps a service
#: name at 63 characters.
MAX_SLUG = 63 - len("challenge-")
_VERSION = re.compile(r"[0-9]+(\.[0-9]+)*([a-z0-9.+-]*)")


class _Template(string.Template):
    delimiter = "@@"


@dataclass(frozen=True)
class Names:
    """Every name the generated package derives from its slug."""

    #: The entry point's name: what BASE and ``--challenge`` call the challenge.
    slug: str
    #: The Python package, named apart from the slug so that it never shadows another module.
    module: str
    #: The distribution on PyPI and in ``pip list``.
    distribution: str
    #: The prefix of the challenge's table names, so that they never clash with another challenge's.
    tables: str

    @classmethod
    def of(cls, slug: str) -> Names:
        """Check ``slug`` and derive the names; raises :class:`ConfigError` for a bad slug."""
        if not _SLUG.fullmatch(slug):
            raise ConfigError(
                f"challenge slug {slug!r} is not lowercase letters, digits and single dashes "
                "(for example bounty-hunt); nothing was written"
            )
        if len(slug) > MAX_SLUG:
            raise ConfigError(
                f"challenge slug {slug!r} has {len(slug)} characters; at most {MAX_SLUG} fit in BASE's "
                "service name challenge-<slug>; nothing was written"
            )
        stem = slug.replace("-", "_")
        module = f"{stem}_challenge" if stem[0].isalpha() else f"challenge_{stem}"
        return cls(slug=slug, module=module, distribution=f"{slug}-challenge", tables=f"{stem}_")


#: Where the generated CI and README install base-runner from, besides a local checkout's folder.
SOURCES = ("pypi", "git")


@dataclass(frozen=True)
class Runner:
    """The base-runner release a generated package builds on: its version, its image, where to install it from."""

    #: The base-runner version the package requires at least, and whose image it builds on.
    version: str = release.release_version()
    #: The runner image without its tag, ``release.IMAGE`` unless a fork publishes its own.
    image: str = release.IMAGE
    #: ``pypi``, ``git`` (the release's tag in ``release.REPOSITORY``), or a local checkout's folder.
    source: str | Path = "git"

    def __post_init__(self) -> None:
        if not _VERSION.fullmatch(self.version):
            raise ConfigError(f"runner version {self.version!r} is not a version like 0.1.0; nothing was written")
        if not self.image or any(c.isspace() or c in ":@" for c in self.image.rpartition("/")[2]):
            raise ConfigError(
                f"runner image {self.image!r} is not an image name without a tag, "
                f"like {release.IMAGE}; nothing was written"
            )

    @classmethod
    def of(cls, version: str | None = None, image: str | None = None, source: str | None = None) -> Runner:
        """The runner from ``base-runner new``'s options; a checkout's version is the default for a checkout."""
        if source is None or source in SOURCES:
            return cls(version or release.release_version(), image or release.IMAGE, source or "git")
        checkout = Path(source).expanduser().resolve()
        return cls(version or checkout_version(checkout), image or release.IMAGE, checkout)

    def requirement(self, package: Path) -> str:
        """What ``pip install`` takes for this runner with its testing extra, from the package's folder ``package``."""
        if isinstance(self.source, Path):
            try:
                where = Path(os.path.relpath(self.source, package.resolve())).as_posix()
            except ValueError:  # another drive
                where = self.source.as_posix()
            return f"{where if where.startswith(('.', '/')) else './' + where}[testing]"
        return release.requirement(self.version, self.source)


def checkout_version(checkout: Path) -> str:
    """The version of the base-runner checkout at ``checkout``; :class:`ConfigError` when it is none."""
    try:
        project = tomllib.loads((checkout / "pyproject.toml").read_text(encoding="utf-8")).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        project = {}
    if project.get("name") != release.PACKAGE or not isinstance(project.get("version"), str):
        raise ConfigError(
            f"--runner-from {checkout} is not a base-runner checkout (no pyproject.toml naming {release.PACKAGE} "
            "and its version); give pypi, git, or the folder of a clone; nothing was written"
        )
    return str(project["version"])


def render(names: Names, runner: Runner | None = None, target: Path | None = None) -> dict[Path, str]:
    """Every generated file's path (relative to the package folder ``target``, default ``./<slug>``) and content."""
    runner = runner or Runner()
    values = {
        "slug": names.slug,
        "module": names.module,
        "distribution": names.distribution,
        "tables": names.tables,
        "runner_package": release.PACKAGE,
        "runner_version": runner.version,
        "runner_requirement": runner.requirement(Path(names.slug) if target is None else target),
        "runner_repository": release.REPOSITORY,
        "runner_image": release.image(runner.version, runner.image),
    }
    rendered = {}
    for template in sorted(TEMPLATES.rglob(f"*{SUFFIX}")):
        parts = [
            names.module if part == "package" else "." + part[len("dot-") :] if part.startswith("dot-") else part
            for part in template.relative_to(TEMPLATES).with_suffix("").parts
        ]
        rendered[Path(*parts)] = _Template(template.read_text(encoding="utf-8")).substitute(values)
    return rendered


def create(slug: str, target: Path | None = None, runner: Runner | None = None) -> tuple[Names, Path, list[Path]]:
    """Write a new challenge package for ``slug`` into ``target`` (default ``./<slug>``).

    ``target`` must be absent or an empty folder; ``runner`` is the base-runner
    release the package builds on (default: this one, from ``release.IMAGE``). Every file is rendered
    before the first one is written, and a bad slug or target raises
    :class:`ConfigError` with nothing written.

    :returns: the names, the folder, and the files written in it.
    """
    names = Names.of(slug)
    target = Path(slug) if target is None else target
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target} exists and is not a folder; choose another --dir; nothing was written")
    if target.is_dir() and any(target.iterdir()):
        raise ConfigError(f"{target} is not empty; choose an empty or new folder with --dir; nothing was written")
    files = render(names, runner, target)
    try:
        for relative, text in files.items():
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {exc.filename}: {exc.strerror}") from None
    return names, target, list(files)
