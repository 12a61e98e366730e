"""The plugin contract: every hook a challenge may implement.

A challenge is a Python package that declares an entry point in the
``base_runner`` group; the entry point's name is the challenge slug and its
value is the module holding the hook implementations::

    [project.entry-points.base_runner]
    example = "example_challenge.plugin"

Implementations are plain module-level functions decorated with
:data:`hookimpl`. Only ``get_weights`` is required. Any function decorated
with :data:`hookimpl` whose name is not a hook below is refused at load time,
so a typo never goes unnoticed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI

#: The pluggy project name; also the entry-point group challenges register in.
PROJECT_NAME = "base_runner"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)

#: Decorator that marks a function in a challenge module as a hook implementation.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec(firstresult=True)
def get_weights() -> dict[str, float] | Awaitable[dict[str, float]]:  # type: ignore[empty-body]  # never called
    """Return this epoch's raw score for each miner hotkey. Required.

    May be ``async def`` (to query the database through
    ``database.session()``) or a plain ``def`` (run in a worker thread, for
    pure computation). The BASE master normalizes the values, so raw scores
    are fine; an empty map is legal and burns the challenge's share.

    The runner validates the map before it leaves: keys must be non-empty
    strings of at most 128 characters, values real numbers (not ``bool``),
    finite and ``>= 0``. Invalid entries are dropped, logged with their
    hotkey and reason, and counted in the response's ``metadata``. A call
    that raises, returns something that is not a ``dict``, or runs past
    ``CHALLENGE_WEIGHTS_TIMEOUT`` seconds (default 8) is answered with a JSON
    5xx error naming the challenge; nothing is cached.

    :returns: a map from hotkey to a finite, non-negative score.
    """


@hookspec
def register_routers() -> APIRouter | Sequence[APIRouter] | None:
    """Return the challenge's FastAPI routers: one ``APIRouter`` or a list.

    They are included at the application's root: the master's public proxy
    forwards ``/challenges/<slug>/<path>`` to ``/<path>``. Paths the runner
    owns are refused at load time: ``/health``, ``/ready``, ``/version``,
    ``/weights`` and everything under ``/internal`` but
    ``/internal/v1/bridge/...``, where the master forwards the submissions
    it verified; routes there must depend on
    :func:`base_runner.verified_hotkey`.

    :returns: the routers to include, or ``None`` for a challenge without
        public routes.
    """


@hookspec
def lifespan(app: FastAPI) -> AbstractAsyncContextManager[Any] | None:
    """Return an async context manager that spans the application's life.

    It is entered at startup, once the tables exist and the database
    answers, and left at shutdown, before the database is closed: the place
    to start and stop background workers. Start workers with
    :func:`base_runner.run_worker` so that a worker that dies stops the
    process instead of leaving stale weights behind.

    :param app: the FastAPI application being started.
    :returns: an async context manager, or ``None`` when there is nothing to do.
    """


@hookspec
def register_tasks() -> Sequence[Any] | None:
    """Return the challenge's evaluation tasks: ``async def`` functions decorated with ``@jobs.task``.

    Jobs of these tasks are what :func:`base_runner.jobs.enqueue` adds, in
    the caller's write transaction; the runner runs them durably: through
    restarts, ``kill -9`` and failures, retried with backoff, at most once at
    a time each (``docs/authoring.md``, "Evaluate submissions"). A returned
    value that is not such a task, or two tasks with one name, stop the
    runner at startup with one line naming it.

    :returns: a list of tasks, or ``None`` for a challenge without jobs.
    """
