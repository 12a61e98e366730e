"""What one step of the pusher did, what the master answered, and what the ledger says."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .store import Push, PushStore

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class Attempt:
    """What one step of the pusher did.

    ``outcome`` is one of: ``acknowledged``, ``idempotent``, ``sealed``,
    ``conflict``, ``rejected``, ``refused`` (401/403 and other 4xx, retried
    slowly), ``unavailable`` (5xx or no answer, retried with backoff),
    ``bad_ack``, ``current`` (nothing new to push), ``empty``, ``waiting``,
    ``error`` (no weights, no token or no store).
    """

    outcome: str
    push: Push | None = None
    status: int | None = None
    detail: str | None = None
    ack: dict[str, object] | None = None

    @property
    def ok(self) -> bool:
        """Whether the master holds the current weights, or there is nothing new to give it."""
        return self.outcome in ("acknowledged", "idempotent", "current", "sealed")


def shown_url(url: str) -> str:
    """``url`` without credentials, for logs and ``/ready``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def detail_of(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail if detail is not None else body)[:200]


def ledger(store: PushStore) -> dict[str, object]:
    """What the ledger says: the last acknowledged epoch, revision and snapshot, and what is pending."""
    acked, pending = store.last_acknowledged(), store.pending()
    return {
        "epoch": acked.epoch if acked else None,
        "revision": acked.revision if acked else None,
        "snapshot_id": acked.snapshot_id if acked else None,
        "pending": pending.view() if pending else None,
    }
