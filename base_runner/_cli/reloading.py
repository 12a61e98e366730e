"""``base-runner serve --reload``: restart the server whenever the challenge's code changes.

For local development only. uvicorn's reloader watches the challenge's
package folder and runs the server in a child process, which builds the
runner afresh through :func:`child` each time, exactly as ``serve`` does: the
same settings, lock and checks, tracing, metrics port and connection limits.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import sys
from pathlib import Path
from socket import socket

from .._core.errors import RunnerError
from .options import configure_logging, start

log = logging.getLogger("base_runner")


def _package_folder(module: str) -> Path | None:
    spec = importlib.util.find_spec(module.partition(":")[0].partition(".")[0])
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None


def serve(
    challenge: str | None,
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    debug: bool,
    log_format: str | None,
) -> None:
    """Run uvicorn's reloader on the selected challenge's package folder."""
    import uvicorn
    from uvicorn.supervisors import ChangeReload

    from .._core.settings import load_settings, prepare_data_dir
    from .._plugins.plugins import select

    settings = load_settings(host=host, port=port, data_dir=data_dir, log_format=log_format)
    configure_logging(debug, settings.log_format)
    selected = select(challenge)
    # What the child process reads: it starts from the environment, like serve in a container.
    os.environ["BASE_CHALLENGE_SLUG"] = selected.name
    os.environ["CHALLENGE_DATA_DIR"] = str(prepare_data_dir(settings.data_dir).resolve())
    os.environ["CHALLENGE_HOST"], os.environ["CHALLENGE_PORT"] = settings.host, str(settings.port)
    folder = _package_folder(selected.module)
    log.info("serving %s, reloading when %s changes", selected.name, folder or "its code")
    config = uvicorn.Config(
        f"{__name__}:child",  # named for uvicorn's checks; the child is run as the reloader's target
        reload=True,
        reload_dirs=[str(folder)] if folder else None,
        host=settings.host,
        port=settings.port,
        log_level=logging.DEBUG if debug else logging.INFO,
        # uvicorn's own handlers would print its lines (the reloader's, the child's) as plain text
        # beside the runner's JSON: its loggers go through the one setup instead, in both processes.
        log_config=None,
    )
    target = functools.partial(child, debug=debug, log_format=log_format)
    ChangeReload(config, target=target, sockets=[config.bind_socket()]).run()


def child(sockets: list[socket] | None = None, *, debug: bool = False, log_format: str | None = None) -> None:
    """One server, in the reloader's child process, run as ``serve`` runs it; a fault is one line, then it waits."""
    from .._http.assembly import build_runner
    from .._http.server import NeverStarted, run

    level = logging.DEBUG if debug else logging.INFO
    try:
        settings, loaded = start(None, level, log_format=log_format)
        runner = build_runner(loaded, settings, serve=True)
    except RunnerError as exc:
        if not logging.getLogger().handlers:  # the fault came before start() set the logging up
            configure_logging(False)
        log.error("%s (waiting for a change to reload)", exc)
        sys.exit(exc.exit_code)
    try:
        fatal = run(runner, level, sockets)
    except NeverStarted:
        sys.exit(3)
    if fatal is not None:
        log.error("challenge %s: %s (waiting for a change to reload)", loaded.name, fatal)
        sys.exit(1)
