"""base-runner: one generic runner for BASE challenges; a challenge ships as a plugin wheel.

The names a challenge imports::

    from base_runner import Base, database, hookimpl, run_worker, storage
    from base_runner import ChallengeSettings, Secret, OwnerAuth, VerifiedHotkey, verified_hotkey
    from base_runner import UTCDateTime
    from base_runner import ApiError, error_response
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("base-runner")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from . import storage
    from .auth import OwnerAuth, VerifiedHotkey, verified_hotkey
    from .columns import UTCDateTime
    from .config import ChallengeSettings, Secret
    from .db import Base, database
    from .hookspecs import hookimpl
    from .wire import ApiError, error_response
    from .workers import run_worker

# Imported on first use: pytest loads base_runner.testing in every run where
# base-runner is installed, and FastAPI and SQLAlchemy cost most of a second.
_HOMES = {
    "Base": ".db",
    "database": ".db",
    "hookimpl": ".hookspecs",
    "run_worker": ".workers",
    "storage": ".storage",
    "ChallengeSettings": ".config",
    "Secret": ".config",
    "OwnerAuth": ".auth",
    "VerifiedHotkey": ".auth",
    "verified_hotkey": ".auth",
    "UTCDateTime": ".columns",
    "ApiError": ".wire",
    "error_response": ".wire",
}

__all__ = [
    "ApiError",
    "Base",
    "ChallengeSettings",
    "OwnerAuth",
    "Secret",
    "UTCDateTime",
    "VerifiedHotkey",
    "__version__",
    "database",
    "error_response",
    "hookimpl",
    "run_worker",
    "storage",
    "verified_hotkey",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'base_runner' has no attribute {name!r}")
    module = importlib.import_module(home, __name__)
    value = module if name == "storage" else getattr(module, name)
    globals()[name] = value
    return value
