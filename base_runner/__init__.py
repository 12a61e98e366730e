"""base-runner: one generic runner for BASE challenges; a challenge ships as a plugin wheel.

The names a challenge imports::

    from base_runner import Base, database, hookimpl, run_worker, storage
    from base_runner import ChallengeSettings, Secret, OwnerAuth, VerifiedHotkey, verified_hotkey
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("base-runner")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

from . import storage
from .auth import OwnerAuth, VerifiedHotkey, verified_hotkey
from .config import ChallengeSettings, Secret
from .db import Base, database
from .hookspecs import hookimpl
from .workers import run_worker

__all__ = [
    "Base",
    "ChallengeSettings",
    "OwnerAuth",
    "Secret",
    "VerifiedHotkey",
    "__version__",
    "database",
    "hookimpl",
    "run_worker",
    "storage",
    "verified_hotkey",
]
