"""A stand-in for the 3.1 master's raw-weight ingress, written from the protocol, served over real HTTP.

``POST /internal/v1/challenges/<slug>/raw-weights`` as ``docs/operating.md``
and the contract describe it: bearer token, ``X-Timestamp`` within 30 s,
HMAC-SHA256 signature, strict body with its canonical digest, freshness,
epoch window, nonce and revision idempotency, sealing. It keeps everything
it accepted, so a test can check what the master would seal.

Faults are scripted: :meth:`MasterDouble.script` queues what the next
requests get (a status, a dropped connection before or after the snapshot is
stored, an answer held back until released); :meth:`stop` and :meth:`start`
take the whole master down and bring it back on the same port.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ROUTE = re.compile(r"^/internal/v1/challenges/([^/]+)/raw-weights$")
FIELDS = {
    "protocol_version",
    "challenge_slug",
    "epoch",
    "revision",
    "computed_at",
    "expires_at",
    "nonce",
    "weights",
    "payload_digest",
}
HOTKEY = re.compile(r"[1-9A-HJ-NP-Za-km-z]{3,64}")


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that went away (a killed runner) is part of the tests


class Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class Received:
    """One request as the double saw it, and what it answered (``None``: no answer)."""

    slug: str
    headers: dict[str, str]
    body: bytes
    status: int | None = None
    answer: dict[str, Any] | None = None


@dataclass
class Snapshot:
    snapshot_id: str
    epoch: int
    revision: int
    nonce: str
    body_hash: str
    payload_digest: str
    weights: dict[str, float]


@dataclass
class MasterDouble:
    tokens: dict[str, str]
    #: Seconds added to this host's clock: the master's clock runs ahead by this much.
    skew: float = 0.0
    received: list[Received] = field(default_factory=list)
    snapshots: dict[tuple[str, int, int], Snapshot] = field(default_factory=dict)
    nonces: dict[tuple[str, str], Snapshot] = field(default_factory=dict)
    sealed: int | None = None
    port: int = 0

    def __post_init__(self) -> None:
        self._faults: deque[Any] = deque()
        self._lock = threading.Lock()
        self.release = threading.Event()
        self.arrived = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    # -- control ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MasterDouble:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                double._handle(self)

        server = _Server(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """The master goes down: its port refuses connections."""
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    def script(self, *faults: Any) -> None:
        """What the next requests get, in order: a status code, ``"drop"`` (stored, no answer),
        ``"drop_before"`` (not stored, no answer), ``"hold"`` (stored, answer held until :attr:`release`)."""
        self._faults.extend(faults)

    def seal(self, epoch: int) -> None:
        """The master's tick: ``epoch`` is sealed; it and every earlier one answer 409."""
        with self._lock:
            self.sealed = epoch if self.sealed is None else max(self.sealed, epoch)

    def wait_for(self, count: int, timeout: float = 20) -> list[Received]:
        """Block until ``count`` requests arrived."""
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.received) >= count, timeout), (
                f"{len(self.received)} requests arrived, not {count}: {self.received}"
            )
        return self.received

    def now(self) -> float:
        return datetime.now(UTC).timestamp() + self.skew

    # -- the ingress -----------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        match = ROUTE.match(handler.path)
        record = Received(match.group(1) if match else "", {k.lower(): v for k, v in handler.headers.items()}, body)
        fault = self._faults.popleft() if self._faults else None
        with self.arrived:
            self.received.append(record)
            self.arrived.notify_all()
        if fault == "drop_before":
            handler.close_connection = True
            return
        if isinstance(fault, int):
            self._answer(handler, record, fault, {"detail": "scripted failure"})
            return
        try:
            if match is None:
                raise Refused(404, "Not Found")
            status, answer = 200, self._accept(record)
        except Refused as refused:
            status, answer = refused.status, {"detail": refused.detail}
        if fault == "drop":
            handler.close_connection = True
            return
        if fault == "hold":
            self.release.wait(60)
        self._answer(handler, record, status, answer)

    def _answer(self, handler: BaseHTTPRequestHandler, record: Received, status: int, answer: dict[str, Any]) -> None:
        data = json.dumps(answer).encode()
        record.status, record.answer = status, answer
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _accept(self, record: Received) -> dict[str, Any]:
        headers, body, slug = record.headers, record.body, record.slug
        if headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise Refused(415, "unsupported media type")
        if len(body) > 256_000:
            raise Refused(413, "payload too large")
        payload = self._parse(body)
        if payload["challenge_slug"] != slug or headers.get("x-base-challenge-slug", slug) != slug:
            raise Refused(403, "Forbidden")
        self._authenticate(slug, headers, body)
        now = self.now()
        computed, expires = _time(payload["computed_at"]), _time(payload["expires_at"])
        if not (computed - 30 <= now < expires + 30):
            raise Refused(422, "snapshot outside freshness window")
        with self._lock:
            epoch, revision = payload["epoch"], payload["revision"]
            if self.sealed is not None and epoch <= self.sealed:
                raise Refused(409, "stale or sealed epoch" if epoch < self.sealed else "epoch is sealed")
            if self.sealed is not None and epoch - self.sealed > 2:
                raise Refused(422, "epoch too far in the future")
            body_hash = hashlib.sha256(body).hexdigest()
            known = self.nonces.get((slug, payload["nonce"]))
            if known is not None:
                if (known.body_hash, known.epoch, known.revision) != (body_hash, epoch, revision):
                    raise Refused(409, "conflicting raw weight payload")
                return self._ack(slug, known, idempotent=True)
            known = self.snapshots.get((slug, epoch, revision))
            if known is not None:
                if known.payload_digest != payload["payload_digest"]:
                    raise Refused(409, "conflicting raw weight payload")
                return self._ack(slug, known, idempotent=True)
            snapshot = Snapshot(
                str(uuid.uuid4()),
                epoch,
                revision,
                payload["nonce"],
                body_hash,
                payload["payload_digest"],
                payload["weights"],
            )
            self.snapshots[(slug, epoch, revision)] = snapshot
            self.nonces[(slug, payload["nonce"])] = snapshot
            return self._ack(slug, snapshot, idempotent=False)

    def _parse(self, body: bytes) -> dict[str, Any]:
        try:
            payload = json.loads(body.decode("utf-8"))
        except ValueError:
            raise Refused(422, "invalid raw weight payload") from None
        if not isinstance(payload, dict) or set(payload) != FIELDS:
            raise Refused(422, "invalid raw weight payload")
        weights = payload["weights"]
        checks = [
            payload["protocol_version"] == "1.0",
            isinstance(payload["challenge_slug"], str)
            and re.fullmatch(r"[a-z0-9][a-z0-9-]*", payload["challenge_slug"]),
            type(payload["epoch"]) is int and payload["epoch"] >= 0,
            type(payload["revision"]) is int and payload["revision"] >= 1,
            isinstance(payload["nonce"], str) and 1 <= len(payload["nonce"]) <= 256,
            isinstance(weights, dict) and len(weights) >= 1,
        ]
        if not all(checks):
            raise Refused(422, "invalid raw weight payload")
        if len(weights) > 4096:
            raise Refused(413, "payload too large")
        for hotkey, value in weights.items():
            # 3.0, not 3: the master's floats are strict.
            if not HOTKEY.fullmatch(hotkey) or not any(c.isalpha() for c in hotkey):
                raise Refused(422, "invalid raw weight payload")
            if type(value) is not float or not math.isfinite(value) or value < 0:
                raise Refused(422, "invalid raw weight payload")
        try:
            computed, expires = _time(payload["computed_at"]), _time(payload["expires_at"])
        except (TypeError, ValueError):
            raise Refused(422, "invalid raw weight payload") from None
        if expires <= computed:
            raise Refused(422, "invalid raw weight payload")
        # The digest, from the protocol's words: every other field, sorted keys, "," and ":", times as UTC ...Z.
        fields = {k: v for k, v in payload.items() if k != "payload_digest"}
        for name in ("computed_at", "expires_at"):
            moment = datetime.fromisoformat(fields[name].replace("Z", "+00:00")).astimezone(UTC)
            fields[name] = moment.isoformat().replace("+00:00", "Z")
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        if hashlib.sha256(canonical).hexdigest() != payload["payload_digest"]:
            raise Refused(422, "payload_digest mismatch")
        return payload

    def _authenticate(self, slug: str, headers: dict[str, str], body: bytes) -> None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        expected = self.tokens.get(slug)
        if scheme.lower() != "bearer" or expected is None or not hmac.compare_digest(token.strip(), expected):
            raise Refused(401, "Unauthorized")
        signature, timestamp = headers.get("x-signature"), headers.get("x-timestamp", "")
        if not signature or not timestamp.isdigit() or abs(self.now() - int(timestamp)) > 30:
            raise Refused(401, "Unauthorized")
        path = f"/internal/v1/challenges/{slug}/raw-weights"
        message = f"POST\n{path}\n{slug}\n{timestamp}\n{hashlib.sha256(body).hexdigest()}".encode()
        if not hmac.compare_digest(signature.lower(), hmac.new(expected.encode(), message, hashlib.sha256).hexdigest()):
            raise Refused(401, "Unauthorized")

    def _ack(self, slug: str, snapshot: Snapshot, idempotent: bool) -> dict[str, Any]:
        return {
            "protocol_version": "1.0",
            "challenge_slug": slug,
            "epoch": snapshot.epoch,
            "revision": snapshot.revision,
            "snapshot_id": snapshot.snapshot_id,
            "payload_digest": snapshot.payload_digest,
            "accepted": True,
            "idempotent": idempotent,
        }

    def payloads(self, slug: str) -> dict[tuple[int, int], set[str]]:
        """Every distinct payload digest the double received per (epoch, revision), accepted or not."""
        seen: dict[tuple[int, int], set[str]] = {}
        for record in self.received:
            try:
                payload = json.loads(record.body)
            except ValueError:
                continue
            if record.slug == slug and isinstance(payload, dict) and "epoch" in payload:
                seen.setdefault((payload["epoch"], payload["revision"]), set()).add(payload.get("payload_digest"))
        return seen


def _time(text: object) -> float:
    if not isinstance(text, str):
        raise TypeError("not a time")
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("a time needs a zone")
    return value.timestamp()
