"""The sandbox's rules, checked before any backend is called, whatever the backend.

A spec that breaks one is refused with :class:`~.spec.RunRefused` naming the rule and
the fix. The broker checks most of these again; the local Docker Engine checks none,
so they live here, once, for both.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .spec import Limits, Mount, RunRefused, RunSpec

#: An image reference as the template and BASE's broker accept it (never an option: no leading dash).
_IMAGE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9./_:@+-]{0,254}$")
#: Networks a master makes for evaluations: BASE 3.1's ``base_*``, the seed's ``platform_*``.
_NETWORK_PREFIXES = ("base_", "platform_")
_PULL_POLICIES = frozenset({"Always", "IfNotPresent", "Never"})
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SIZE = re.compile(r"^\d+(\.\d+)?[bkmgBKMG]?$")
_ULIMIT = re.compile(r"^[a-z]+=-?\d+(:-?\d+)?$")
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
#: A day, the broker's own bound on ``timeout_seconds``.
MAX_TIMEOUT = 86_400


@dataclass(frozen=True)
class CheckedMount:
    """A mount whose source is a resolved path inside the data dir."""

    source: Path
    target: str
    read_only: bool


def check(
    spec: RunSpec,
    timeout: float,
    *,
    data_dir: Path,
    allowed_images: Sequence[str],
    protected: Sequence[Path] = (),
) -> tuple[CheckedMount, ...]:
    """Refuse ``spec`` if it breaks a rule; return its mounts, resolved.

    ``protected`` are files no mount may show, whole or through a folder that holds them: the database.
    """
    if not isinstance(spec, RunSpec):
        raise RunRefused(f"executor.run takes an executor.RunSpec, not {type(spec).__name__}")
    _check_image(spec, allowed_images)
    if not spec.command or not all(isinstance(part, str) for part in spec.command):
        raise RunRefused("RunSpec.command must be a non-empty tuple of strings, for example ('python', 'eval.py')")
    if isinstance(spec.command, str):
        raise RunRefused("RunSpec.command is a tuple of arguments, not one string: write ('sh', '-c', '...')")
    if not (isinstance(timeout, int | float) and math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT):
        raise RunRefused(f"the timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT}, got {timeout!r}")
    if spec.image_pull_policy is not None and spec.image_pull_policy not in _PULL_POLICIES:
        raise RunRefused("RunSpec.image_pull_policy must be Always, IfNotPresent, Never or None")
    if spec.workdir is not None and not _absolute(spec.workdir):
        raise RunRefused(f"RunSpec.workdir must be an absolute path inside the container, got {spec.workdir!r}")
    if spec.name is not None and not _NAME.match(spec.name):
        raise RunRefused("RunSpec.name must be letters, digits, '_', '.' or '-' (at most 128), starting with one")
    _check_strings("env", spec.env, keys=_ENV_NAME)
    _check_strings("labels", spec.labels)
    _check_limits(spec.limits)
    return _check_mounts(spec.mounts, data_dir, protected)


def _check_image(spec: RunSpec, allowed: Sequence[str]) -> None:
    image = spec.image
    if not isinstance(image, str) or not _IMAGE.match(image):
        raise RunRefused(f"unsafe Docker image reference: {image!r}")
    if not allowed:
        raise RunRefused(
            f"image {image} is not allowed: CHALLENGE_EXECUTOR_ALLOWED_IMAGES is empty; "
            "set it to the images the challenge may run (an entry ending in '*', '/' or ':' is a prefix)"
        )
    if not any(_matches(image, item) for item in allowed):
        raise RunRefused(
            f"image {image} is not allowed: it matches none of CHALLENGE_EXECUTOR_ALLOWED_IMAGES ({', '.join(allowed)})"
        )


def _matches(image: str, item: str) -> bool:
    # The template's and the broker's rule, made stricter: an entry ending in '*', '/' or ':' is a
    # prefix ('ghcr.io/me/' allows every image of that owner), any other is one image. Docker Hub's
    # short names are compared written out too: 'python:3.12' is 'docker.io/library/python:3.12'.
    candidates = (image, canonical_image(image))
    if item.endswith(("*", "/", ":")):
        return any(candidate.startswith(item.rstrip("*")) for candidate in candidates)
    return item in candidates or canonical_image(item) in candidates


def canonical_image(image: str) -> str:
    """``image`` with Docker's implicit registry and namespace written out."""
    registry, slash, _ = image.partition("/")
    if not slash:
        return f"docker.io/library/{image}"
    if "." not in registry and ":" not in registry and registry != "localhost":
        return f"docker.io/{image}"
    return image


def _check_limits(limits: Limits) -> None:
    if not isinstance(limits, Limits):
        raise RunRefused(f"RunSpec.limits must be an executor.Limits, not {type(limits).__name__}")
    if limits.privileged:
        raise RunRefused("privileged containers are refused: a miner's code never runs with the host's privileges")
    network = limits.network
    if network != "none" and not network.startswith(_NETWORK_PREFIXES):
        raise RunRefused(
            f"network {network!r} is refused: use 'none' (the default) or a network the master made for "
            "evaluations ('base_*' under BASE 3.1, 'platform_*' under the seed's master)"
        )
    hardening = (
        (limits.read_only, "a read-only root filesystem (Limits.read_only=True); write to a tmpfs or a mount"),
        (limits.init, "an init process (Limits.init=True), so that no process outlives the run"),
        ("ALL" in limits.cap_drop, "every capability dropped (Limits.cap_drop must hold 'ALL')"),
        (
            any(opt.startswith("no-new-privileges") for opt in limits.security_opt),
            "no-new-privileges (Limits.security_opt must hold it)",
        ),
    )
    for kept, rule in hardening:
        if not kept:
            raise RunRefused(f"the sandbox requires {rule}")
    if not (isinstance(limits.cpus, int | float) and math.isfinite(limits.cpus) and limits.cpus > 0):
        raise RunRefused(f"Limits.cpus must be a positive number, got {limits.cpus!r}")
    for name, size in (("memory", limits.memory), ("memory_swap", limits.memory_swap)):
        if (size is not None or name == "memory") and not (isinstance(size, str) and _SIZE.match(size.strip())):
            raise RunRefused(f"Limits.{name} must be a size such as '512m' or '4g', got {size!r}")
    if isinstance(limits.pids_limit, bool) or not isinstance(limits.pids_limit, int) or limits.pids_limit < 1:
        raise RunRefused(f"Limits.pids_limit must be a positive integer, got {limits.pids_limit!r}")
    gpus = limits.gpu_count
    if gpus is not None and (isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1):
        raise RunRefused(f"Limits.gpu_count must be a positive integer or None, got {gpus!r}")
    for ulimit in limits.ulimits:
        if not _ULIMIT.match(ulimit):
            raise RunRefused(f"Limits.ulimits entries look like 'nofile=1024:1024', got {ulimit!r}")
    for tmpfs in limits.tmpfs:
        if not _absolute(tmpfs.partition(":")[0]):
            raise RunRefused(f"Limits.tmpfs entries look like '/tmp:rw,noexec,size=512m', got {tmpfs!r}")


def _check_mounts(mounts: Sequence[Mount], data_dir: Path, protected: Sequence[Path]) -> tuple[CheckedMount, ...]:
    root = data_dir.resolve()
    hidden = [path.resolve() for path in protected]
    checked: list[CheckedMount] = []
    targets: set[str] = set()
    for mount in mounts:
        if not isinstance(mount, Mount):
            raise RunRefused(f"RunSpec.mounts holds executor.Mount values, not {type(mount).__name__}")
        if not _absolute(mount.target) or mount.target in targets or ":" in mount.target:
            raise RunRefused(f"mount target {mount.target!r} must be an absolute path, once per spec, without ':'")
        targets.add(mount.target)
        given = Path(mount.source)
        # Resolved, symlinks and '..' included, before the comparison: no path leaves the data dir.
        source = (given if given.is_absolute() else root / given).resolve()
        if source != root and root not in source.parents:
            raise RunRefused(f"mount source {given} is outside the data dir {root}: mount only the data volume's files")
        if source == root:
            raise RunRefused("the whole data dir cannot be mounted: it holds the database; mount a folder inside it")
        for secret in hidden:
            if secret == source or source in secret.parents:
                raise RunRefused(
                    f"mount source {source} would show {secret.name}, the challenge's database, to the run"
                )
        if not source.exists():
            raise RunRefused(f"mount source {source} does not exist: create it before the run")
        if not mount.read_only and not source.is_dir():
            raise RunRefused(f"writable mount source {source} must be a folder")
        checked.append(CheckedMount(source, mount.target, mount.read_only))
    return tuple(checked)


def _check_strings(what: str, values: Mapping[str, str], keys: re.Pattern[str] | None = None) -> None:
    for key, value in values.items():
        if not isinstance(key, str) or not isinstance(value, str) or (keys is not None and not keys.match(key)):
            raise RunRefused(f"RunSpec.{what} maps names to strings; {key!r} does not")


def _absolute(path: str) -> bool:
    return isinstance(path, str) and path.startswith("/") and ".." not in PurePosixPath(path).parts
