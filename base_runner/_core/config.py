"""Settings for challenge code: ``CHALLENGE_*`` variables, and secrets that may live in files.

A challenge subclasses :class:`ChallengeSettings` and declares its own
fields; a field typed :class:`Secret` reads ``CHALLENGE_<NAME>``, or else
the file named by ``CHALLENGE_<NAME>_FILE`` (the master mounts secrets under
``/run/secrets/base/``). The file is read each time the secret is used, so
it can be rotated without a restart, and a secret's value never shows in a
``repr``, a log line, a dump or a validation error.
"""

from __future__ import annotations

import difflib
import logging
import os
import typing
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import core_schema
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .logs import never_log
from .secrets import read_secret_file
from .settings import invalid_setting

_MASK = "**********"
log = logging.getLogger("base_runner")


class Secret:
    """A secret setting: a value, or a file read again on every use.

    When both are given, a non-empty value wins over the file.

    :param value: the secret itself.
    :param file: a file that holds the secret.
    """

    __slots__ = ("_file", "_value")

    def __init__(self, value: str | None = None, *, file: Path | str | None = None) -> None:
        self._value = value or None
        self._file = Path(file) if file else None

    @property
    def file(self) -> Path | None:
        """The file the secret is read from, if it comes from one."""
        return self._file

    def get_secret_value(self) -> str | None:
        """The secret now: the value, or the file's stripped content read at this call.

        ``None`` when no value is set and the file is missing or empty.
        Raises :class:`~base_runner.AuthFailure` (503,
        ``secret_unreadable``; ``str()`` names the file and the uid) when the
        file exists but cannot be read.
        """
        if self._value is not None:
            never_log(self._value)
            return self._value
        if self._file is None:
            return None
        return read_secret_file(self._file, kind="secret")

    def __repr__(self) -> str:
        if self._value is not None:
            return f"Secret('{_MASK}')"
        return f"Secret(file={str(self._file)!r})" if self._file else "Secret(None)"

    def __str__(self) -> str:
        return _MASK if self._value is not None else repr(self)

    @classmethod
    def __get_pydantic_core_schema__(cls, _source: Any, _handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate, serialization=core_schema.plain_serializer_function_ser_schema(str)
        )

    @classmethod
    def _validate(cls, value: object) -> Secret:
        if isinstance(value, Secret):
            return value
        if isinstance(value, str):
            return cls(value)
        raise ValueError("a secret must be a string")


def _is_secret(annotation: object) -> bool:
    return annotation is Secret or Secret in typing.get_args(annotation)


class _SecretsFromEnvironment(PydanticBaseSettingsSource):
    """``<PREFIX><NAME>`` and ``<PREFIX><NAME>_FILE`` for every :class:`Secret` field."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ does the whole job

    def __call__(self) -> dict[str, Any]:
        prefix = self.config.get("env_prefix", "")
        found: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            if not _is_secret(field.annotation):
                continue
            variable = f"{prefix}{name}".upper()
            value, file = os.environ.get(variable), os.environ.get(f"{variable}_FILE")
            if value or file:
                found[name] = Secret(value, file=file)
        return found


_warned: set[str] = set()


def _variables(cls: type[BaseSettings]) -> set[str]:
    prefix = cls.model_config.get("env_prefix", "")
    names = {f"{prefix}{name}".upper() for name in cls.model_fields}
    secrets = {f"{prefix}{name}_FILE".upper() for name, f in cls.model_fields.items() if _is_secret(f.annotation)}
    return names | secrets


def _warn_unread(cls: type[ChallengeSettings]) -> None:
    """Warn, once each, about ``CHALLENGE_*`` variables no settings class reads: most are typos."""
    from .settings import RunnerSettings

    prefix = cls.model_config.get("env_prefix", "")
    if prefix != RunnerSettings.model_config.get("env_prefix"):
        return
    known = _variables(RunnerSettings) | {f"{name}_FILE" for name in _variables(RunnerSettings)}
    pending, classes = [ChallengeSettings], []
    while pending:
        current = pending.pop()
        classes.append(current)
        pending.extend(current.__subclasses__())
    for settings_class in classes:
        known |= _variables(settings_class)
    for variable in sorted(os.environ):
        if variable.startswith(prefix) and variable not in known and variable not in _warned:
            _warned.add(variable)
            close = difflib.get_close_matches(variable, sorted(_variables(cls)), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            log.warning("%s is set but neither %s nor the runner reads it%s", variable, cls.__name__, hint)


class ChallengeSettings(BaseSettings):
    """Base class for a challenge's settings, read from ``CHALLENGE_*`` variables.

        Subclass it and declare fields; ``close_after: float = 60`` reads
        ``CHALLENGE_CLOSE_AFTER``. Fields typed :class:`Secret` (or
        ``Secret | None``) also read ``CHALLENGE_<NAME>_FILE``. Other variables
        are ignored, but each ``CHALLENGE_*`` variable that no settings class
    reads is logged as a warning (naming the closest field), since most are
    typos. An invalid value raises
        :class:`~base_runner.ConfigError`, one line naming the variable
        and never its value, so ``serve`` stops with exit code 2.

        The runner takes ``CHALLENGE_SHARED_TOKEN`` out of the environment
        before challenge code is imported: challenge settings never see it.
    """

    model_config = SettingsConfigDict(env_prefix="CHALLENGE_", extra="ignore", hide_input_in_errors=True)

    #: The token of the challenge's owner, for :class:`~base_runner.OwnerAuth`.
    owner_token: Secret | None = None

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise invalid_setting(exc, self.model_config.get("env_prefix", "")) from None
        _warn_unread(type(self))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Ahead of the plain environment, so a secret's value and its file are read together.
        return init_settings, _SecretsFromEnvironment(settings_cls), env_settings, dotenv_settings, file_secret_settings
