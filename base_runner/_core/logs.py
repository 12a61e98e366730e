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
import time
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


def _utc(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now() -> str:
    return _utc(time.time())


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
        line = self.line(
            _utc(record.created),
            record.levelname,
            record.name,
            getattr(record, "challenge", None),
            getattr(record, "correlation_id", None),
            record.getMessage(),
            _fields(record),
        )
        if record.exc_info or record.exc_text:
            exception = self.formatException(record.exc_info) if record.exc_info else record.exc_text
            line = line[:-1] + ", " + json.dumps({"exception": exception}, ensure_ascii=False)[1:]
        return _secrets.mask(line)

    @staticmethod
    def line(
        time: str,
        level: str,
        logger: str,
        challenge: str | None,
        correlation: str | None,
        message: str,
        fields: dict[str, Any],
    ) -> str:
        """The line of a record with these parts (no exception), unmasked."""
        line: dict[str, Any] = {"time": time, "level": level, "logger": logger, "challenge": challenge}
        if correlation is not None:
            line["correlation_id"] = correlation
        line["message"] = message
        line.update(fields)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``<time> <level> <logger> [<challenge> <correlation id>] <message>``, for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        line = self.line(
            _utc(record.created),
            record.levelname,
            record.name,
            getattr(record, "challenge", None),
            getattr(record, "correlation_id", None),
            record.getMessage(),
            {},
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return _secrets.mask(line)

    @staticmethod
    def line(
        time: str,
        level: str,
        logger: str,
        challenge: str | None,
        correlation: str | None,
        message: str,
        fields: dict[str, Any],
    ) -> str:
        """The line of a record with these parts, unmasked; the fields are not shown."""
        where = " ".join(filter(None, (challenge, correlation)))
        return f"{time} {level:<7} {logger} [{where}] {message}"


#: The one handler :func:`setup` installed, for :func:`write`.
_handler: logging.StreamHandler[TextIO] | None = None


def write(logger: logging.Logger, level: int, message: str, fields: dict[str, Any], correlation: str) -> None:
    """Log ``message`` on ``logger`` as its line would read, without a ``LogRecord`` when the setup allows.

    For the access line, written once per request: the logging machinery (a
    record, the filters, the formatter's walk over the record) cost more than
    a small answer (docs/performance.md). The line is the same, formatted
    once and written to the one handler's stream under its lock; when the
    logger's level is not enabled, nothing is done. When anything else
    receives records (a handler added by a test or a challenge), the record
    goes through ``logging`` as usual.
    """
    if not logger.isEnabledFor(level):
        return
    handler = _handler
    if handler is None or logging.root.handlers != [handler] or logger.handlers or not logger.propagate:
        logger.log(level, message, extra={**fields, "correlation_id": correlation})
        return
    formatter = handler.formatter
    assert isinstance(formatter, JsonFormatter | TextFormatter)
    name = logging.getLevelName(level)
    line = formatter.line(_now(), name, logger.name, _context.challenge, correlation, message, fields)
    try:
        with handler.lock:  # type: ignore[union-attr]  # a StreamHandler always has its lock
            handler.stream.write(_secrets.mask(line) + handler.terminator)
            handler.flush()
    except Exception:
        logger.log(level, message, extra={**fields, "correlation_id": correlation})


def setup(log_format: str = "auto", level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Send every logger's records (the runner's, the challenge's, uvicorn's) to one handler on ``stream``.

    :param log_format: ``text``, ``json``, or ``auto``: JSON unless ``stream`` is a terminal.
    :param level: the lowest level logged.
    :param stream: where lines go; default stderr.
    """
    stream = sys.stderr if stream is None else stream
    as_json = log_format == "json" or (log_format == "auto" and not stream.isatty())
    global _handler
    handler = _handler = logging.StreamHandler(stream)
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
