"""One logging setup for the runner, the challenge's code and uvicorn.

Every record goes through one handler on stderr: human-readable text on a
terminal, one JSON object per line everywhere else (a container's log driver,
a file, a pipe), or as ``--log-format`` / ``CHALLENGE_LOG_FORMAT`` says. Each
line carries the time, level, logger, challenge slug and, inside a request,
its correlation id. Known secret values and bearer tokens are masked in the
finished line, whoever logged them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

#: The logger of the one line per request.
ACCESS_LOGGER = "base_runner.access"
MASK = "[redacted]"

# uvicorn's own loggers: they must reach the root handler, not handlers of their own.
_UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
# A credential in the shape an Authorization header carries it, whoever logs one.
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
# Record attributes every LogRecord has; anything else came in through ``extra``.
# uvicorn's color_message repeats the message with terminal escapes.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}


class _Context(logging.Filter):
    """Stamps each record with the challenge slug and the current request's correlation id."""

    def __init__(self) -> None:
        super().__init__()
        self.challenge: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        record.challenge = self.challenge
        if getattr(record, "correlation_id", None) is None:
            record.correlation_id = _current_correlation_id()
        return True


def _current_correlation_id() -> str | None:
    from .correlation import correlation_id  # set per request by the correlation middleware

    return correlation_id.get()


class _Secrets:
    """Values that must never reach a log line, masked in every finished line."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def mask(self, line: str) -> str:
        for value in self.values:
            if value in line:
                line = line.replace(value, MASK)
        if "earer" in line or "asic" in line:
            line = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", line)
        return line


_context = _Context()
_secrets = _Secrets()


def _utc(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD and key not in ("challenge", "correlation_id")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time``, ``level``, ``logger``, ``challenge``, ``message``, more when known.

    ``correlation_id`` inside a request, ``exception`` with the traceback
    when there is one, and whatever the record got through ``extra``.
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _utc(record),
            "level": record.levelname,
            "logger": record.name,
            "challenge": getattr(record, "challenge", None),
        }
        correlation = getattr(record, "correlation_id", None)
        if correlation is not None:
            line["correlation_id"] = correlation
        line["message"] = record.getMessage()
        line.update(_fields(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return _secrets.mask(json.dumps(line, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """``<time> <level> <logger> [<challenge> <correlation id>] <message>``, for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        where = " ".join(filter(None, (getattr(record, "challenge", None), getattr(record, "correlation_id", None))))
        line = f"{_utc(record)} {record.levelname:<7} {record.name} [{where}] {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return _secrets.mask(line)


def setup(log_format: str = "auto", level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Send every logger's records (the runner's, the challenge's, uvicorn's) to one handler on ``stream``.

    :param log_format: ``text``, ``json``, or ``auto``: JSON unless ``stream`` is a terminal.
    :param level: the lowest level logged.
    :param stream: where lines go; default stderr.
    """
    stream = sys.stderr if stream is None else stream
    as_json = log_format == "json" or (log_format == "auto" and not stream.isatty())
    handler = logging.StreamHandler(stream)
    handler.addFilter(_context)
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _UVICORN:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def set_challenge(slug: str) -> None:
    """Name ``slug`` on every line from now on."""
    _context.challenge = slug


def never_log(*values: str | None) -> None:
    """Mask each of ``values`` (tokens, secret file contents) wherever it would appear in a line."""
    for value in values:
        # Short values would mask ordinary words; no real token is that short.
        if value and len(value) >= 6:
            _secrets.values.add(value)
