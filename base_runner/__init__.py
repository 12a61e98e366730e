"""base-runner: one generic runner for BASE challenges; a challenge ships as a plugin wheel.

The names a challenge imports::

    from base_runner import Base, database, hookimpl, run_worker, storage
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("base-runner")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

from . import storage
from .db import Base, database
from .hookspecs import hookimpl
from .workers import run_worker

__all__ = ["Base", "__version__", "database", "hookimpl", "run_worker", "storage"]
