"""What a run asks for and what it answers: the template's ``Docker*`` classes without the prefix.

The names, fields and defaults are those of BASE's ``challenge_sdk.executors.docker``
(``DockerRunSpec``, ``DockerMount``, ``DockerLimits``, ``DockerRunResult``), so that a
challenge ported from the template renames its imports and changes nothing else.
Nothing is checked here: every check runs when the spec is submitted
(:mod:`.policy`), so that a refusal is counted and reported like any other outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: Bytes of stdout and of stderr a result keeps: the tail, as the template and BASE's broker keep it.
LOG_LIMIT_BYTES = 64_000
#: Seconds a run may take when the caller gives no timeout: the broker's own default.
DEFAULT_TIMEOUT = 900


class ExecutorError(RuntimeError):
    """A run could not be carried out; ``str()`` says why and what to change."""


class RunRefused(ExecutorError):
    """The spec breaks the sandbox's rules (image off the list, a network, privileges, a mount outside the data dir).

    Raised before any backend is called.
    """


class BackendError(ExecutorError):
    """The backend (the local Docker Engine or the master's broker) failed or refused the run."""


class BackendUnavailable(BackendError):
    """No backend is configured or reachable; ``str()`` names the settings that choose one."""


@dataclass(frozen=True)
class Mount:
    """A folder (or file) of the data volume, seen by the container at ``target``.

    :param source: a path inside the data dir; a relative one is relative to it.
    :param target: the absolute path inside the container.
    :param read_only: ``False`` for a folder the container writes; its files are there after the run.
    """

    source: Path | str
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class Limits:
    """Resources and kernel surface of a run; the defaults are the template's and the broker's."""

    cpus: float = 2.0
    memory: str = "4g"
    memory_swap: str | None = "4g"
    pids_limit: int = 512
    #: ``none``, or a ``base_*`` / ``platform_*`` network a master made for evaluations.
    network: str = "none"
    read_only: bool = True
    user: str | None = None
    tmpfs: tuple[str, ...] = ("/tmp:rw,noexec,nosuid,size=512m",)
    ulimits: tuple[str, ...] = ("nofile=1024:1024",)
    cap_drop: tuple[str, ...] = ("ALL",)
    security_opt: tuple[str, ...] = ("no-new-privileges",)
    init: bool = True
    gpu_count: int | None = None
    #: Always refused: kept so that a ported spec that sets it fails with a clear error, not a TypeError.
    privileged: bool = False


@dataclass(frozen=True)
class RunSpec:
    """One container run: ``image`` runs ``command`` with ``mounts`` under ``limits``."""

    image: str
    command: tuple[str, ...]
    mounts: tuple[Mount, ...] = ()
    workdir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    #: The container's name; by default one made of the challenge, the job and a random part.
    name: str | None = None
    limits: Limits = field(default_factory=Limits)
    #: ``Always``, ``IfNotPresent`` or ``Never``; ``None``: pull only an image the engine lacks.
    image_pull_policy: str | None = None


@dataclass(frozen=True)
class RunResult:
    """A finished run: the exit code and the tails of its output.

    A run that outlived its timeout answers ``returncode`` 124 with ``timed_out``;
    its container is gone. The files the container wrote to a writable mount are in
    that mount's source folder.
    """

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False
    container_name: str = ""

    @property
    def ok(self) -> bool:
        """Exited 0 within its timeout."""
        return self.returncode == 0 and not self.timed_out
