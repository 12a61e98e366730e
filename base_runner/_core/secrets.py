"""Secrets: read from their files when used, compared in constant time, never logged.

Below both the runner's credentials (:mod:`.auth`) and the challenge's own
settings (:mod:`.config`), which read their secrets' files the same way.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from .logs import never_log
from .wire import ApiError


class AuthFailure(ApiError):
    """Why a request is refused: an HTTP status, an envelope code and one sentence.

    ``AuthFailure(401, "invalid_token", "...")``; ``str()`` is the sentence.
    """


def read_secret_file(path: Path, kind: str = "token") -> str | None:
    """The stripped content of a secret file; ``None`` when it does not exist or is empty.

    Raises :class:`AuthFailure` (503, ``<kind>_unreadable``) naming the file
    and the uid when it exists but cannot be read, the fault real challenges
    hit with secrets mounted for another uid.
    """
    try:
        secret = path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise AuthFailure(
            503, f"{kind}_unreadable", f"cannot read the {kind} file {path} as uid {os.getuid()}: {reason}"
        ) from None
    never_log(secret)
    return secret


def same_token(given: str, expected: str) -> bool:
    """Compare in constant time, so the answer's timing says nothing of the token."""
    return hmac.compare_digest(given.encode(), expected.encode())
