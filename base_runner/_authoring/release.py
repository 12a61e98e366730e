"""Where base-runner is published: the one place that names its package, image and repository.

``base-runner new``, the generated files, the docs and the release workflow
(``.github/workflows/release.yml``) all name these; a test keeps the docs and
the workflow in step with them. A fork that publishes elsewhere changes them
here, and authors of its challenges pass ``base-runner new --runner-image``.
"""

from __future__ import annotations

from .._core.version import __version__

#: The distribution on PyPI: ``pip install base-runner``.
PACKAGE = "base-runner"
#: The runner image on GHCR, without a tag; tagged ``X.Y.Z``, ``X.Y`` and ``latest`` by each release.
IMAGE = "ghcr.io/base-runner/base-runner"
#: The source repository, where ``docs/authoring.md`` lives; each release is its tag ``vX.Y.Z``.
REPOSITORY = "https://github.com/base-runner/base-runner"


def release_version() -> str:
    """This runner's version as released: ``__version__`` without a local ``+...`` part."""
    return __version__.partition("+")[0]


def image(version: str | None = None, name: str = IMAGE) -> str:
    """The runner image ``name`` tagged with ``version`` (default: this runner's version)."""
    return f"{name}:{version or release_version()}"


def requirement(version: str | None = None, source: str = "pypi", extras: str = "testing") -> str:
    """What ``pip install`` takes for the runner ``version`` with ``extras``: from PyPI, or the release's git tag.

    ``source`` is ``pypi`` (``base-runner[testing]==X.Y.Z``) or ``git``
    (``base-runner[testing] @ git+<REPOSITORY>@vX.Y.Z``), which works before
    the release is on PyPI and for a fork that never publishes there.
    """
    version = version or release_version()
    if source == "git":
        return f"{PACKAGE}[{extras}] @ git+{REPOSITORY}@v{version}"
    return f"{PACKAGE}[{extras}]=={version}"
