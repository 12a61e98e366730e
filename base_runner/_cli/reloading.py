"""``base-runner serve --reload``: restart the server whenever the challenge's code changes.

For local development only. uvicorn's reloader watches the challenge's
package folder and runs the server in a child process, which builds the app
afresh through :func:`app` each time: the same settings, lock and checks as
``serve``, without its production limits and exit codes.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Any

from .._core.errors import RunnerError
from .options import configure_logging, start

log = logging.getLogger("base_runner")


def _package_folder(module: str) -> Path | None:
    spec = importlib.util.find_spec(module.partition(":")[0].partition(".")[0])
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None


def serve(challenge: str | None, host: str | None, port: int | None, data_dir: Path | None, debug: bool) -> None:
    """Run uvicorn's reloader on the selected challenge's package folder."""
    import uvicorn

    from .._core.settings import load_settings, prepare_data_dir
    from .._plugins.plugins import select

    settings = load_settings(host=host, port=port, data_dir=data_dir)
    configure_logging(debug, settings.log_format)
    selected = select(challenge)
    # What the child process reads: it starts from the environment, like serve in a container.
    os.environ["BASE_CHALLENGE_SLUG"] = selected.name
    os.environ["CHALLENGE_DATA_DIR"] = str(prepare_data_dir(settings.data_dir).resolve())
    folder = _package_folder(selected.module)
    log.info("serving %s, reloading when %s changes", selected.name, folder or "its code")
    uvicorn.run(
        "base_runner._cli.reloading:app",
        factory=True,
        reload=True,
        reload_dirs=[str(folder)] if folder else None,
        host=settings.host,
        port=settings.port,
        log_level="debug" if debug else "info",
        # uvicorn's own handlers would print its lines (the reloader's, the child's) as plain text
        # beside the runner's JSON: its loggers go through the one setup instead, in both processes.
        log_config=None,
    )


def app() -> Any:
    """The app, built in the reloader's child process; a fault there is one line, then the reloader waits."""
    from .._http.app import create_app, serving
    from .._storage.datadir import DataDirLock
    from .._storage.dbfile import DatabaseFile

    try:
        settings, loaded = start(None)
        DataDirLock(settings.data_dir).acquire(settings.lock_wait)  # held until this child exits
        dbfile = DatabaseFile.of(settings)
        dbfile.check_before_open()
        return serving(create_app(loaded, settings, dbfile=dbfile))
    except RunnerError as exc:
        if not logging.getLogger().handlers:  # the fault came before start() set the logging up
            configure_logging(False)
        log.error("%s (waiting for a change to reload)", exc)
        sys.exit(exc.exit_code)
