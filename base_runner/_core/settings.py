"""The runner's own settings, and the environment it leaves to challenge code.

Everything here runs before any challenge module is imported: settings are
read, control-plane credentials are removed from the process environment,
and the data dir is checked, so that a plugin can neither see a credential
nor start against a database the runner would refuse.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .errors import ConfigError

log = logging.getLogger("base_runner")

DATABASE_FILE = "challenge.sqlite3"
DRIVER = "sqlite+aiosqlite"

# Variables the runner itself reads outside the CHALLENGE_ prefix.
_KEPT = frozenset({"BASE_CHALLENGE_SLUG", "BASE_RUNNER_TRACE_HOOKS"})
# Control-plane names: the master's own database and settings, and libpq's
# variables, which would hand any Postgres client the master's credentials.
_CONTROL_PLANE = re.compile(r"^(BASE_|PLATFORM_|POSTGRES_|PG[A-Z]+$|DATABASE_URL$)")
#: Tokens the runner holds for challenge code, read into :class:`RunnerSettings` before it is loaded.
_RUNNER_SECRETS = frozenset({"CHALLENGE_SHARED_TOKEN", "CHALLENGE_DOCKER_BROKER_TOKEN"})
_POSTGRES_VALUE = re.compile(r"^\s*postgres(ql)?(\+\w+)?://", re.IGNORECASE)


class RunnerSettings(BaseSettings):
    """Settings of one runner process, from ``CHALLENGE_*`` variables or the CLI.

    Keyword arguments (the CLI's options) win over the environment.
    """

    model_config = SettingsConfigDict(env_prefix="CHALLENGE_", extra="ignore")

    #: The volume for the SQLite file, artifacts and temporary files.
    data_dir: Path = Path("/data")
    #: ``sqlite+aiosqlite:///<file>``; defaults to ``<data_dir>/challenge.sqlite3``.
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    #: A second port answering ``GET /metrics`` with no token, for a scraper on the node; ``None``: none.
    metrics_port: int | None = Field(None, ge=1, le=65535)
    #: The address the metrics port binds; ``None``: the same as ``host``.
    metrics_host: str | None = None
    #: The master's bearer token; when unset, read from ``shared_token_file``.
    shared_token: SecretStr | None = None
    #: Read again on every request, so the master may rotate it.
    shared_token_file: Path = Path("/run/secrets/base/challenge_token")
    #: Seconds ``get_weights`` may run before the call is answered with 504.
    weights_timeout: float = Field(8.0, gt=0)
    #: Seconds a computed body may be served when no write came since; ``None``: until the next write.
    weights_ttl: float | None = Field(60.0, gt=0)
    #: The access line: unset logs every answer but the cached weights ones, ``True`` those too,
    #: ``False`` none (only 5xx answers, as warnings).
    access_log: bool | None = None
    #: Log lines as ``text``, ``json`` (one object a line), or ``auto``: JSON unless stderr is a terminal.
    log_format: Literal["auto", "text", "json"] = "auto"
    #: Bytes a request body may hold; a larger one is refused with 413 while it streams in.
    max_body_bytes: int = Field(1024 * 1024, gt=0)
    #: Seconds a request may take to send its whole body, from the end of its headers; then 408.
    body_timeout: float = Field(30.0, gt=0)
    #: Bytes of a request's line and headers together; more is refused with 431.
    max_header_bytes: int = Field(32 * 1024, ge=1024)
    #: Header lines a request may carry; more is refused with 431.
    max_headers: int = Field(100, gt=0)
    #: Seconds a connection may take to send a request's line and headers; then 408 and closed.
    header_timeout: float = Field(10.0, gt=0)
    #: Seconds an idle keep-alive connection is kept open between requests (uvicorn's ``timeout_keep_alive``).
    keep_alive_timeout: float = Field(5.0, gt=0)
    #: Open connections; beyond it the oldest one still waiting for its headers is closed.
    max_connections: int = Field(1000, gt=0)
    #: Nesting of arrays and objects a JSON value in a request may have; deeper is refused with 422.
    max_json_depth: int = Field(32, gt=0)
    #: SQLite's ``synchronous``: ``FULL`` syncs every commit to disk before it is acknowledged;
    #: ``NORMAL`` is faster but an OS crash or a failing disk loses acknowledged writes.
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    #: Seconds ``serve`` waits for another runner to release the data dir before it exits 2.
    lock_wait: float = Field(15.0, ge=0)
    #: Megabytes the database's volume must have free to open the database and to report ready.
    min_free_mb: float = Field(16.0, ge=0)
    #: Seconds between checks of the database file's identity and its volume's free space (also on ``/ready``).
    disk_check_interval: float = Field(2.0, gt=0)
    #: Seconds the event loop may go without turning before the watchdog logs its stack and ``/ready`` says so.
    loop_stall: float = Field(2.0, gt=0)
    #: The 3.1 master's URL, for example ``http://master:8080``; when set, weights are pushed to it.
    master_base_url: str | None = None
    #: Seconds per epoch: must equal the master's ``epoch_interval_seconds``.
    epoch_seconds: int = Field(360, ge=1)
    #: Seconds between the pusher's looks at the weights; a new revision is pushed only when they changed.
    push_interval: float = Field(30.0, gt=0)
    #: Seconds a pushed snapshot stays valid (its ``expires_at``); a retry past it sends a new snapshot.
    push_snapshot_lifetime: int = Field(600, ge=1)
    #: Images ``executor.run`` may start, comma-separated; an entry ending in ``*``, ``/`` or ``:`` is a prefix.
    executor_allowed_images: Annotated[tuple[str, ...], NoDecode] = ()
    #: ``false`` turns the executor off: every run is refused as unavailable.
    docker_enabled: bool = True
    #: ``auto``: the broker when ``docker_broker_url`` is set, else the local engine; ``cli`` is the template's
    #: name for ``docker``, the local engine (reached through its API, never its command line).
    docker_backend: Literal["auto", "broker", "docker", "cli"] = "auto"
    #: The master's Docker broker, for example ``http://base-docker-broker:8082``; BASE injects it.
    docker_broker_url: str | None = None
    #: The broker's token; when unset, read from ``docker_broker_token_file`` at each run.
    docker_broker_token: SecretStr | None = None
    docker_broker_token_file: Path = Path("/run/secrets/base/docker_broker_token")
    #: Whose broker: ``base`` (3.1: ``X-Base-Challenge-Slug``, ``base.*`` labels), ``platform`` (the seed's:
    #: ``X-Platform-Challenge-Slug``, ``platform.*``), or ``auto``: 3.1's, unless the broker asks for the other.
    docker_broker_master: Literal["auto", "base", "platform"] = "auto"
    #: Job attempts that may run at once in the process, all tasks together (each task also has its own limit).
    jobs_concurrency: int = Field(4, ge=1, le=1000)
    #: Seconds a running job's lease lasts; renewed every third of it. After ``kill -9`` a job runs again
    #: once its lease has expired.
    jobs_lease: float = Field(10.0, ge=0.3, le=3600)
    #: Seconds running jobs get to finish at shutdown before they are cancelled and put back (unspent).
    jobs_grace: float = Field(5.0, ge=0, le=3600)
    #: Seconds succeeded and cancelled jobs are kept before they are pruned; dead jobs are kept until retried.
    jobs_retention: float = Field(7 * 86400.0, gt=0)

    @field_validator("master_base_url", "docker_broker_url")
    @classmethod
    def _master_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host, for example http://master:8080")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or a fragment")
        return value

    @field_validator("executor_allowed_images", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("metrics_port", "metrics_host", "access_log", "docker_broker_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # CHALLENGE_METRICS_PORT= in a compose file or a service spec turns the port off rather than failing.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("metrics_port")
    @classmethod
    def _apart_from_port(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value == info.data.get("port"):
            raise ValueError(f"must differ from CHALLENGE_PORT ({value}), which serves the app and needs the token")
        return value

    @field_validator("synchronous", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


def load_settings(**overrides: object) -> RunnerSettings:
    """Read settings from the environment, with ``overrides`` (not ``None``) on top."""
    given: dict[str, Any] = {key: value for key, value in overrides.items() if value is not None}
    try:
        return RunnerSettings(**given)
    except ValidationError as exc:
        raise invalid_setting(exc, "CHALLENGE_") from None


def invalid_setting(exc: ValidationError, prefix: str) -> ConfigError:
    """One line naming the first invalid variable and what is wrong, never its value."""
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "settings"
    return ConfigError(f"{prefix}{field.upper()}: {first['msg']}")


def scrub_environment(environ: dict[str, str] | None = None) -> list[str]:
    """Remove control-plane credentials and the master's tokens from the environment.

    The tokens (the shared one, the Docker broker's) move into :class:`RunnerSettings`
    before this runs; challenge code never needs them. Returns the removed names (never their values).
    """
    env = os.environ if environ is None else environ
    removed = sorted(
        name
        for name, value in env.items()
        if name not in _KEPT and (_CONTROL_PLANE.match(name) or _POSTGRES_VALUE.match(value) or name in _RUNNER_SECRETS)
    )
    for name in removed:
        del env[name]
    if removed:
        log.info("removed from the environment before loading the challenge: %s", ", ".join(removed))
    return removed


def database_url(settings: RunnerSettings) -> str:
    """The checked SQLite URL: ``CHALLENGE_DATABASE_URL`` or the data dir's file."""
    if settings.database_url is None:
        return f"{DRIVER}:///{(settings.data_dir / DATABASE_FILE).resolve()}"
    try:
        url = make_url(settings.database_url)
    except ArgumentError:
        raise ConfigError(
            f"CHALLENGE_DATABASE_URL is not a URL; use {DRIVER}:///{settings.data_dir / DATABASE_FILE}"
        ) from None
    if url.drivername != DRIVER:
        # Only the scheme is echoed: the refused URL may hold a password.
        raise ConfigError(
            f"CHALLENGE_DATABASE_URL must be a {DRIVER}:// URL, got a {url.drivername}:// one: "
            "a challenge keeps its state in SQLite on its /data volume and never talks to Postgres"
        )
    if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
        raise ConfigError(
            "CHALLENGE_DATABASE_URL must name a database file, "
            f"for example {DRIVER}:///{settings.data_dir / DATABASE_FILE}"
        )
    parent = Path(url.database).parent
    if not parent.is_dir():
        raise ConfigError(f"the database's folder {parent} does not exist; create it or fix CHALLENGE_DATABASE_URL")
    return settings.database_url


def database_path(settings: RunnerSettings) -> Path:
    """The database file that :func:`database_url` names."""
    return Path(make_url(database_url(settings)).database or "")


def prepare_data_dir(data_dir: Path) -> Path:
    """Check the data dir is a writable folder, and point ``TMPDIR`` inside it.

    Temporary files go to ``<data dir>/tmp`` so that a read-only root
    filesystem works. Returns the resolved data dir.
    """
    hint = "create it, or pass --data-dir (for example --data-dir ./data) or set CHALLENGE_DATA_DIR"
    if not data_dir.exists():
        raise ConfigError(f"data dir {data_dir} does not exist: {hint}")
    if not data_dir.is_dir():
        raise ConfigError(f"data dir {data_dir} is not a folder: {hint}")
    tmp = data_dir.resolve() / "tmp"
    try:
        tmp.mkdir(exist_ok=True)
        probe = tmp / f".write-probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"data dir {data_dir} is not writable by uid {os.getuid()} ({exc.strerror}): "
            "fix its owner or mode, or pass another --data-dir"
        ) from None
    os.environ["TMPDIR"] = str(tmp)
    # tempfile caches its choice on first use; reset it so this process follows too.
    tempfile.tempdir = str(tmp)
    return data_dir.resolve()
