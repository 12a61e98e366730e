"""Authenticating the BASE master on the internal endpoints.

The token is never logged and is compared in constant time. When it comes
from a file, the file is read on every request so the master can rotate it.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

SLUG_HEADERS = ("x-base-challenge-slug", "x-platform-challenge-slug")


@dataclass(eq=False)
class AuthFailure(Exception):
    """Why a request is refused: an HTTP status and a JSON-able body."""

    status_code: int
    error: str
    detail: str

    def body(self) -> dict[str, str]:
        return {"error": self.error, "detail": self.detail}


def read_secret_file(path: Path) -> str | None:
    """The stripped content of a secret file; ``None`` when it does not exist.

    Raises :class:`AuthFailure` (503) naming the file when it exists but
    cannot be read, the fault real challenges hit with secrets mounted for
    another uid.
    """
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise AuthFailure(
            503, "token_unreadable", f"cannot read the token file {path} as uid {os.getuid()}: {reason}"
        ) from None


@dataclass(frozen=True)
class MasterAuth:
    """Checks the master's bearer token and slug header."""

    slug: str
    token: SecretStr | None
    token_file: Path

    def expected_token(self) -> str:
        if self.token is not None and self.token.get_secret_value():
            return self.token.get_secret_value()
        token = read_secret_file(self.token_file)
        if token is None:
            raise AuthFailure(
                503,
                "token_not_configured",
                f"no master token is configured: set CHALLENGE_SHARED_TOKEN or mount it at {self.token_file} "
                "(CHALLENGE_SHARED_TOKEN_FILE)",
            )
        return token

    def check(self, headers: Mapping[str, str]) -> None:
        """Raise :class:`AuthFailure` unless ``headers`` carry the master's token and this slug."""
        expected = self.expected_token()
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise AuthFailure(401, "missing_token", "send Authorization: Bearer <token>")
        if not hmac.compare_digest(given.strip().encode(), expected.encode()):
            raise AuthFailure(401, "invalid_token", "the bearer token is not this challenge's token")
        slug = next((headers[h] for h in SLUG_HEADERS if h in headers), None)
        if slug is None:
            raise AuthFailure(400, "missing_slug", "send X-Base-Challenge-Slug: <slug>")
        if slug != self.slug:
            raise AuthFailure(400, "wrong_slug", f"this is challenge {self.slug!r}, not {slug[:64]!r}")
