"""base-runner: one generic runner for BASE challenges; a challenge ships as a plugin wheel.

The names a challenge imports::

    from base_runner import Base, database, hookimpl, jobs, run_worker, storage
    from base_runner import ChallengeSettings, Secret, OwnerAuth, VerifiedHotkey, verified_hotkey
    from base_runner import MaxBody           # a route's own cap on its body
    from base_runner import UTCDateTime
    from base_runner import ApiError, error_response
    from base_runner import executor          # miner code in a Docker sandbox

Everything else lives in private subpackages, one per layer (``_core``, ``_storage``, ``_plugins``,
``_weights``, ``_push``, ``_jobs``, ``_observe``, ``_http``, ``_executor``, ``_authoring``, ``_cli``): a
leading underscore says an author may not import it. The public modules are this one, :mod:`base_runner.hookspecs`,
:mod:`base_runner.testing`, :mod:`base_runner.storage`, :mod:`base_runner.executor` and :mod:`base_runner.jobs`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._core.version import __version__

# The public names and the private modules that hold them. Imported on first use: pytest loads
# base_runner.testing in every run where base-runner is installed, and FastAPI and SQLAlchemy cost
# most of a second. Type checkers read the block below instead; tests/test_layers.py keeps both equal.
_HOMES = {
    "ApiError": "._core.wire",
    "AuthFailure": "._core.secrets",
    "Base": "._storage.db",
    "ChallengeSettings": "._core.config",
    "ConfigError": "._core.errors",
    "MaxBody": "._http.limits",
    "OwnerAuth": "._core.auth",
    "RunnerSettings": "._core.settings",
    "Secret": "._core.config",
    "UTCDateTime": "._storage.columns",
    "VerifiedHotkey": "._core.auth",
    "WriterBusy": "._storage.db",
    "correlation_id": "._core.correlation",
    "database": "._storage.db",
    "error_response": "._core.wire",
    "executor": ".executor",
    "hookimpl": ".hookspecs",
    "jobs": ".jobs",
    "run_worker": "._plugins.workers",
    "storage": ".storage",
    "verified_hotkey": "._core.auth",
}

if TYPE_CHECKING:
    from . import executor as executor
    from . import jobs as jobs
    from . import storage as storage
    from ._core.auth import OwnerAuth as OwnerAuth
    from ._core.auth import VerifiedHotkey as VerifiedHotkey
    from ._core.auth import verified_hotkey as verified_hotkey
    from ._core.config import ChallengeSettings as ChallengeSettings
    from ._core.config import Secret as Secret
    from ._core.correlation import correlation_id as correlation_id
    from ._core.errors import ConfigError as ConfigError
    from ._core.secrets import AuthFailure as AuthFailure
    from ._core.settings import RunnerSettings as RunnerSettings
    from ._core.wire import ApiError as ApiError
    from ._core.wire import error_response as error_response
    from ._http.limits import MaxBody as MaxBody
    from ._plugins.workers import run_worker as run_worker
    from ._storage.columns import UTCDateTime as UTCDateTime
    from ._storage.db import Base as Base
    from ._storage.db import WriterBusy as WriterBusy
    from ._storage.db import database as database
    from .hookspecs import hookimpl as hookimpl

#: The public names that are modules, not names inside one.
_MODULES = frozenset({"storage", "executor", "jobs"})

__all__ = ["__version__", *_HOMES]

# Modules of 0.1 that a plugin may have imported, and where they live since 0.2. Importing one
# still works, with a DeprecationWarning naming the new place; the aliases go in 0.3.
_MOVED = {
    "access": "_observe.access",
    "app": "_http.app",
    "auth": "_core.auth",
    "check": "_authoring.check",
    "cli": "_cli.cli",
    "cli_options": "_cli.options",
    "columns": "_storage.columns",
    "config": "_core.config",
    "connections": "_http.connections",
    "correlation": "_core.correlation",
    "datadir": "_storage.datadir",
    "db": "_storage.db",
    "db_commands": "_cli.db_commands",
    "dbfile": "_storage.dbfile",
    "driver": "_storage.driver",
    "errors": "_core.errors",
    "limits": "_http.limits",
    "logs": "_core.logs",
    "loopwatch": "_observe.loopwatch",
    "metrics": "_observe.metrics",
    "openapi": "_http.openapi",
    "plugins": "_plugins.plugins",
    "push": "_push.pusher",
    "push_commands": "_cli.push_commands",
    "push_protocol": "_push.protocol",
    "push_store": "_push.store",
    "release": "_authoring.release",
    "reloading": "_cli.reloading",
    "runtime": "_core.runtime",
    "scaffold": "_authoring.scaffold",
    "schema": "_storage.schema",
    "settings": "_core.settings",
    "sql_fix": "_storage.sql_fix",
    "status": "_cli.status",
    "storable": "_storage.storable",
    "text": "_core.text",
    "tracing": "_observe.tracing",
    "unsaved": "_storage.unsaved",
    "weights": "_weights.weights",
    "weights_routes": "_weights.routes",
    "wire": "_core.wire",
    "workers": "_plugins.workers",
}


def _moved(old: str) -> ModuleType:
    new = f"{__name__}.{_MOVED[old]}"
    warnings.warn(
        f"{__name__}.{old} is deprecated and goes in 0.3: import from {new} or, for a public name, from base_runner",
        DeprecationWarning,
        # Past this function and its one caller here (exec_module or __getattr__); warnings skips
        # the import system's own frames: the line shown is the plugin's import.
        stacklevel=3,
    )
    return importlib.import_module(new)


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``base_runner.<old>`` and loads it as the module at its new place (the same object)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        package, _, old = fullname.rpartition(".")
        if package != __name__ or old not in _MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # a placeholder, replaced below

    def exec_module(self, module: ModuleType) -> None:
        # The import system hands out what sys.modules holds after this call: the module at its new
        # place, so the old name and the new one are the same object.
        sys.modules[module.__name__] = _moved(module.__name__.rpartition(".")[2])


sys.meta_path.append(_MovedModules())


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is not None:
        module = importlib.import_module(home, __name__)
        value = module if name in _MODULES else getattr(module, name)
    elif name in _MOVED:
        value = _moved(name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value
