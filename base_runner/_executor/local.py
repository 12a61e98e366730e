"""The local Docker Engine, through its socket, with Docker's own Python client.

``docker`` (docker-py) is synchronous: every call runs in this backend's own threads,
never on the event loop and never in the loop's default executor, whose few threads
the challenge's synchronous ``get_weights`` needs. A run holds one thread while it
waits for its container; a timeout or a cancellation removes the container, which
ends that wait.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .backend import Prepared, tail
from .spec import BackendError, BackendUnavailable, RunResult

log = logging.getLogger("base_runner")

T = TypeVar("T")

#: Threads for engine calls: one per running container, plus room for creates and removals.
MAX_THREADS = 64
#: Seconds any engine call but the wait for a container may take.
CALL_TIMEOUT = 60
#: The engine keeps at most this much of a container's output on its disk (two files of 1 MB):
#: a miner's code that prints without end fills neither the engine's disk nor the runner's memory.
_LOG_CONFIG = {"type": "json-file", "config": {"max-size": "1m", "max-file": "2"}}
#: The exit code a timed-out run answers, as ``timeout(1)`` and the template answer it.
TIMED_OUT = 124


class LocalDocker:
    """A Docker Engine reached through ``DOCKER_HOST``, or ``/var/run/docker.sock`` without it."""

    kind = "docker"

    def __init__(self, environment: Mapping[str, str] | None = None) -> None:
        self._environment = environment
        self._client: Any = None
        self._connecting = threading.Lock()
        self._threads = concurrent.futures.ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="executor")

    # -- the engine, off the loop ---------------------------------------------------------------

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, function, *args)

    def _engine(self) -> Any:
        with self._connecting:  # the first calls may come from several threads at once
            if self._client is None:
                import docker  # first use: the package costs a tenth of a second to import

                try:
                    self._client = docker.from_env(
                        environment=self._environment, timeout=CALL_TIMEOUT, max_pool_size=MAX_THREADS
                    )
                except docker.errors.DockerException as exc:
                    raise BackendUnavailable(_unreachable(exc)) from None
            return self._client

    async def problem(self) -> str | None:
        try:
            await self._call(lambda: self._engine().ping())
        except BackendUnavailable as exc:
            return str(exc)
        except Exception as exc:
            return _unreachable(exc)
        return None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await self._call(client.close)
        self._threads.shutdown(wait=False)

    # -- a run ----------------------------------------------------------------------------------

    async def run(self, prepared: Prepared) -> RunResult:
        created = self._threads.submit(self._create_and_start, prepared)
        try:
            container = await asyncio.wrap_future(created)
        except asyncio.CancelledError:
            # The create may still be under way in its thread: the container is removed once it exists.
            await asyncio.shield(self._call(self._remove_once_created, created, prepared.name))
            raise
        timed_out = False
        try:
            waited = self._threads.submit(container.wait)
            try:
                status = await asyncio.wait_for(asyncio.wrap_future(waited), prepared.timeout)
            except TimeoutError:
                timed_out = True
                await self._call(self._kill, container)
                status = {"StatusCode": TIMED_OUT}
            stdout, stderr = await self._call(self._logs, container, prepared.log_limit)
        except asyncio.CancelledError:
            # Cancelled (the job was, or its attempt timed out): the removal runs to the end in its
            # thread even if this task is cancelled again while it waits.
            await asyncio.shield(self._call(self._remove, prepared.name))
            raise
        except Exception as exc:
            await asyncio.shield(self._call(self._remove, prepared.name))
            raise _failed("the run", exc) from None
        await asyncio.shield(self._call(self._remove, prepared.name))
        return RunResult(
            returncode=TIMED_OUT if timed_out else int(status.get("StatusCode", -1)),
            stdout=stdout,
            stderr=stderr,
            timed_out=timed_out,
            container_name=prepared.name,
        )

    def _create_and_start(self, prepared: Prepared) -> Any:
        import docker

        spec, limits = prepared.spec, prepared.spec.limits
        engine = self._engine()
        try:
            self._ensure_image(engine, spec.image, spec.image_pull_policy)
            container = engine.containers.create(
                spec.image,
                list(spec.command),
                name=prepared.name,
                labels=dict(prepared.labels),
                working_dir=spec.workdir,
                environment=dict(spec.env),
                network_mode=limits.network,
                read_only=limits.read_only,
                user=limits.user,
                init=limits.init,
                cap_drop=list(limits.cap_drop),
                security_opt=list(limits.security_opt),
                nano_cpus=math.ceil(limits.cpus * 1e9),
                mem_limit=limits.memory,
                memswap_limit=limits.memory_swap,
                pids_limit=limits.pids_limit,
                tmpfs=dict(_split(entry) for entry in limits.tmpfs),
                ulimits=[_ulimit(entry) for entry in limits.ulimits],
                mounts=[
                    docker.types.Mount(m.target, str(m.source), type="bind", read_only=m.read_only)
                    for m in prepared.mounts
                ],
                device_requests=_gpus(limits.gpu_count),
                log_config=_LOG_CONFIG,
                privileged=False,
                stdin_open=False,
                tty=False,
            )
        except docker.errors.DockerException as exc:
            raise _failed("creating the container", exc) from None
        try:
            container.start()
        except docker.errors.DockerException as exc:
            self._remove(prepared.name)
            raise _failed("starting the container", exc) from None
        return container

    @staticmethod
    def _ensure_image(engine: Any, image: str, policy: str | None) -> None:
        import docker

        if policy != "Always":
            try:
                engine.images.get(image)
                return
            except docker.errors.ImageNotFound:
                if policy == "Never":
                    raise BackendError(
                        f"image {image} is not on the Docker Engine and its pull policy is Never"
                    ) from None
        engine.images.pull(image)

    @staticmethod
    def _kill(container: Any) -> None:
        import docker

        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            container.kill()

    @staticmethod
    def _logs(container: Any, limit: int) -> tuple[str, str]:
        out = container.logs(stdout=True, stderr=False)
        err = container.logs(stdout=False, stderr=True)
        return tail(out, limit), tail(err, limit)

    def _remove_once_created(self, created: concurrent.futures.Future[Any], name: str) -> None:
        concurrent.futures.wait([created])
        self._remove(name)

    def _remove(self, name: str) -> None:
        import docker

        try:
            self._engine().api.remove_container(name, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except Exception as exc:
            # Logged, not raised: the next start removes it (remove_stale), and the run's own outcome stands.
            log.warning("executor: could not remove container %s: %s", name, exc)

    # -- stale containers -----------------------------------------------------------------------

    async def remove_stale(self, labels: Mapping[str, str], instance_label: str, instance: str) -> int:
        def sweep() -> int:
            found = self._engine().api.containers(
                all=True, filters={"label": [f"{key}={value}" for key, value in labels.items()]}
            )
            stale = [c["Names"][0].lstrip("/") for c in found if c["Labels"].get(instance_label) != instance]
            for name in stale:
                self._remove(name)
            return len(stale)

        try:
            return await self._call(sweep)
        except BackendUnavailable:
            raise
        except Exception as exc:
            raise _failed("listing the challenge's containers", exc) from None


def _split(entry: str) -> tuple[str, str]:
    path, _, options = entry.partition(":")
    return path, options


def _ulimit(entry: str) -> Any:
    import docker

    name, _, values = entry.partition("=")
    soft, _, hard = values.partition(":")
    return docker.types.Ulimit(name=name, soft=int(soft), hard=int(hard or soft))


def _gpus(count: int | None) -> list[Any]:
    if not count:
        return []
    import docker

    return [docker.types.DeviceRequest(count=count, capabilities=[["gpu"]])]


def _unreachable(exc: BaseException) -> str:
    return (
        f"no Docker backend: the local Docker Engine does not answer ({exc}); set CHALLENGE_DOCKER_BROKER_URL "
        "(the master's broker) or DOCKER_HOST (a local engine; default unix:///var/run/docker.sock)"
    )


def _failed(what: str, exc: BaseException) -> BackendError:
    import docker

    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, docker.errors.APIError):
        return BackendError(f"the Docker Engine refused {what}: {exc.explanation or exc}")
    if isinstance(exc, docker.errors.DockerException | OSError) or type(exc).__module__.startswith("requests"):
        return BackendError(_unreachable(exc))
    return BackendError(f"{what} failed: {type(exc).__name__}: {exc}")
