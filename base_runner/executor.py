"""Run a miner's code in a Docker sandbox, from challenge code::

    from base_runner import executor

    result = await executor.run(
        executor.RunSpec(
            image="ghcr.io/me/harness:1",
            command=("python", "/work/eval.py"),
            mounts=(executor.Mount("submissions/42", "/work"), executor.Mount("out/42", "/out", read_only=False)),
            limits=executor.Limits(memory="1g"),
        ),
        timeout=600,
    )

The names, fields and defaults are the template's (``DockerRunSpec`` is ``RunSpec``, and so
on). :func:`run` is async and never blocks the event loop. The runner checks every spec
before any call (the image allowlist ``CHALLENGE_EXECUTOR_ALLOWED_IMAGES``, the network,
no privileges, mounts only inside the data dir) and runs it through the master's broker
when ``CHALLENGE_DOCKER_BROKER_URL`` is set, or else the local Docker Engine. Inside a
job, the container is labelled with the job and its attempt and removed when the job is
cancelled or times out. See docs/authoring.md, "Evaluating a miner's code".
"""

from __future__ import annotations

from ._executor.service import installed
from ._executor.spec import (
    DEFAULT_TIMEOUT,
    BackendError,
    BackendUnavailable,
    ExecutorError,
    Limits,
    Mount,
    RunRefused,
    RunResult,
    RunSpec,
)

__all__ = [
    "BackendError",
    "BackendUnavailable",
    "ExecutorError",
    "Limits",
    "Mount",
    "RunRefused",
    "RunResult",
    "RunSpec",
    "run",
]


async def run(spec: RunSpec, timeout: float = DEFAULT_TIMEOUT) -> RunResult:
    """Run ``spec`` in a container, at most ``timeout`` seconds, and answer its result.

    A run past ``timeout`` answers ``returncode`` 124 with ``timed_out``; its
    container is removed, as it is when the calling task is cancelled.

    :raises RunRefused: the spec breaks the sandbox's rules; nothing ran.
    :raises BackendError: the Docker Engine or the broker failed, or refused the run.
    :raises BackendUnavailable: no backend is configured or reachable; names the settings.
    """
    return await installed().run(spec, timeout)
