"""The executor the settings choose: the master's broker when its URL is set, else the local Docker Engine."""

from __future__ import annotations

from collections.abc import Mapping

from .._core.errors import ConfigError
from .._core.settings import RunnerSettings, database_path
from .backend import Backend, Prepared
from .local import LocalDocker
from .service import Executor
from .spec import BackendUnavailable, RunResult

#: The backend every executor built from now on uses, whatever the settings: the authors' recorder, in tests.
stand_in: Backend | None = None


class Off:
    """The backend when ``CHALLENGE_DOCKER_ENABLED`` is false: every run is unavailable, saying so."""

    kind = "off"
    reason = "the executor is turned off (CHALLENGE_DOCKER_ENABLED=false)"

    async def run(self, prepared: Prepared) -> RunResult:
        raise BackendUnavailable(self.reason)

    async def remove_stale(self, labels: Mapping[str, str], instance_label: str, instance: str) -> int:
        return 0

    async def problem(self) -> str | None:
        return self.reason

    async def close(self) -> None:
        pass


def build(settings: RunnerSettings, slug: str) -> Executor:
    """The executor of challenge ``slug``, from ``settings``.

    Raises :class:`~base_runner.ConfigError` when ``CHALLENGE_DOCKER_BACKEND=broker`` has no broker URL.
    """
    choice = settings.docker_backend
    url = settings.docker_broker_url
    if choice == "broker" and url is None:
        raise ConfigError("CHALLENGE_DOCKER_BACKEND=broker needs CHALLENGE_DOCKER_BROKER_URL, the master's broker")
    backend: Backend
    if stand_in is not None:
        backend = stand_in
    elif not settings.docker_enabled:
        backend = Off()
    elif url is not None and choice in ("auto", "broker"):
        # Imported here: httpx, which it needs, is several MiB and tens of ms of every start otherwise.
        from .broker import Broker

        token = settings.docker_broker_token
        backend = Broker(
            url,
            slug,
            token=token.get_secret_value() if token is not None else None,
            token_file=settings.docker_broker_token_file,
            master=settings.docker_broker_master,
        )
    else:
        backend = LocalDocker()
    database = database_path(settings)
    # The database and its journals: a mount never shows them to a miner's code.
    protected = [database.with_name(database.name + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    return Executor(
        backend,
        slug=slug,
        data_dir=settings.data_dir,
        allowed_images=settings.executor_allowed_images,
        protected=protected,
    )
