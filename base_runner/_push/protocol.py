"""The 3.1 master's raw-weight push protocol: what a request is, byte for byte.

Pure functions, no I/O: the canonical JSON and its digest, the request body,
the signed headers, which hotkeys the master accepts, and which epoch it is.
``docs/operating.md`` ("Pushing weights to a 3.1 master") describes the
protocol in words; BASE's ``master/raw_weight_ingress.py`` is its judge.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import urlsplit

PROTOCOL_VERSION = "1.0"
#: The master's limits: a larger body or map answers 413, so such a push is never sent.
MAX_BODY_BYTES = 256_000
MAX_ENTRIES = 4_096

_SLUG = re.compile(r"[a-z0-9][a-z0-9-]*")


def slug_problem(slug: str) -> str | None:
    """Why the master's route would refuse ``slug``; ``None`` when it would not."""
    return None if _SLUG.fullmatch(slug) else "a pushed slug must be lowercase letters, digits and '-'"


def epoch_of(now: float, epoch_seconds: int) -> int:
    """The epoch the master seals at unix time ``now``: ``floor(now / epoch_seconds)``."""
    return math.floor(now / epoch_seconds)


def utc(seconds: int) -> str:
    """Unix seconds as the protocol writes a time: ``YYYY-MM-DDTHH:MM:SSZ``."""
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def canonical(fields: Mapping[str, object]) -> bytes:
    """Sorted keys, ``,`` and ``:`` separators, UTF-8: the form the digest is taken over."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def payload_digest(fields: Mapping[str, object]) -> str:
    """SHA-256 hex of the canonical JSON of every field but ``payload_digest``."""
    return hashlib.sha256(canonical({k: v for k, v in fields.items() if k != "payload_digest"})).hexdigest()


def build_body(
    *,
    slug: str,
    epoch: int,
    revision: int,
    computed_at: int,
    lifetime: int,
    nonce: str,
    weights: Mapping[str, float],
) -> bytes:
    """The request body: every field, its digest, in canonical form.

    ``weights`` must already hold only keys the master accepts; values are
    sent as floats (``3.0``, never ``3``), which the master requires.
    """
    fields: dict[str, object] = {
        "protocol_version": PROTOCOL_VERSION,
        "challenge_slug": slug,
        "epoch": epoch,
        "revision": revision,
        "computed_at": utc(computed_at),
        "expires_at": utc(computed_at + lifetime),
        "nonce": nonce,
        "weights": {hotkey: float(value) for hotkey, value in weights.items()},
    }
    fields["payload_digest"] = payload_digest(fields)
    return canonical(fields)


def push_path(master_base_url: str, slug: str) -> str:
    """The path the master routes and the signature covers, under the base URL's own path."""
    prefix = urlsplit(master_base_url).path.rstrip("/")
    return f"{prefix}/internal/v1/challenges/{slug}/raw-weights"


def signature(*, token: str, path: str, slug: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256, keyed by the token, of ``POST\\n<path>\\n<slug>\\n<timestamp>\\n<sha256 hex of body>``."""
    message = f"POST\n{path}\n{slug}\n{timestamp}\n{hashlib.sha256(body).hexdigest()}"
    return hmac.new(token.encode(), message.encode(), hashlib.sha256).hexdigest()


def headers(*, token: str, path: str, slug: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one attempt: a fresh timestamp signs the same body again."""
    return {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "X-Base-Challenge-Slug": slug,
        "X-Timestamp": str(timestamp),
        "X-Signature": signature(token=token, path=path, slug=slug, timestamp=timestamp, body=body),
    }


def ack_problem(ack: object, body: Mapping[str, object]) -> str | None:
    """Why a 200 answer does not acknowledge ``body``; ``None`` when it does."""
    if not isinstance(ack, dict):
        return "the answer is not a JSON object"
    if ack.get("accepted") is not True:
        return "the answer does not say accepted: true"
    for key in ("challenge_slug", "epoch", "revision", "payload_digest"):
        if ack.get(key) != body[key]:
            return f"the answer's {key} is {str(ack.get(key))[:80]!r}, not {body[key]!r}"
    if not isinstance(ack.get("snapshot_id"), str) or not ack["snapshot_id"]:
        return "the answer has no snapshot_id"
    return None
