"""The pusher: the runner sends the weights it serves to a 3.1 master, which seals epochs only from pushes.

It runs under ``serve`` for every challenge when ``CHALLENGE_MASTER_BASE_URL``
is set, and takes the weights the pull endpoint serves (the same cache, never
a second computation). Each request is stored durably
(:mod:`base_runner._push.store`) before it is sent; a retry, in this process or
after a restart, resends the stored bytes under a fresh timestamp and
signature, which is all the protocol lets change.

When it pushes: once early in each epoch (a little before it starts by this
host's clock, so a master whose clock runs ahead, or that seals the moment the
epoch begins, still finds it), then a new revision whenever the weights
change, checked every ``CHALLENGE_PUSH_INTERVAL`` seconds. Unchanged weights
are not sent again, and failures back off, so the master is never flooded.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, ParamSpec, TypeVar
from urllib.parse import urlsplit

from .._core.auth import MasterAuth
from .._core.errors import describe
from .._core.hotkeys import push_problem
from .._core.secrets import AuthFailure
from . import protocol
from .store import Push, PushStore, store_path

if TYPE_CHECKING:
    import httpx

    from .._core.runtime import Runtime
    from .._core.settings import RunnerSettings
    from .._weights.weights import WeightsCache

log = logging.getLogger("base_runner")

P = ParamSpec("P")
T = TypeVar("T")

#: Seconds one request may take, connection included.
REQUEST_TIMEOUT = 10.0
#: Slow retries (the master refused the token or slug, or these bytes) wait this many push intervals.
SLOW_FACTOR = 4
#: The longest lead before an epoch starts: the next epoch is pushed this much before it begins.
MAX_LEAD = 10.0


class TooLarge(ValueError):
    """The body would pass the master's size limit; it is never stored nor sent."""


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


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail if detail is not None else body)[:200]


class Pusher:
    """Pushes one challenge's weights to one master. One task drives it; ``step`` sends at most one request.

    :param slug: the challenge's slug, in the path, the body and the signature.
    :param master_base_url: ``CHALLENGE_MASTER_BASE_URL``.
    :param epoch_seconds: the master's ``epoch_interval_seconds``.
    :param interval: seconds between looks at the weights (``CHALLENGE_PUSH_INTERVAL``).
    :param lifetime: seconds a snapshot is valid (``CHALLENGE_PUSH_SNAPSHOT_LIFETIME``).
    :param weights: the validated weights map, from the weights cache.
    :param token: the master's token, read afresh on each call; raises :class:`~base_runner.AuthFailure`.
    :param report: called with the pusher's state after each step, for ``/ready``.
    :param on_step: called with each step's :class:`Attempt`, for the metrics.
    """

    def __init__(
        self,
        *,
        slug: str,
        master_base_url: str,
        epoch_seconds: int,
        interval: float,
        lifetime: int,
        weights: Callable[[], Awaitable[Mapping[str, float]]],
        token: Callable[[], str],
        store: PushStore,
        client: httpx.AsyncClient,
        report: Callable[[str, dict[str, object]], None] | None = None,
        on_step: Callable[[Attempt], None] | None = None,
    ) -> None:
        self.slug = slug
        parts = urlsplit(master_base_url)
        self.path = protocol.push_path(master_base_url, slug)
        self.url = f"{parts.scheme}://{parts.netloc}{self.path}"
        self.master = shown_url(master_base_url)
        self.epoch_seconds = epoch_seconds
        self.interval = interval
        self.lifetime = lifetime
        self.lead = min(MAX_LEAD, epoch_seconds / 10)
        self._weights = weights
        self._token = token
        self.store = store
        self._client = client
        self._report = report
        self._on_step = on_step
        self._failures = 0
        self._hold_until = 0.0
        self._warned: dict[str, int] = {}
        #: What the ledger's last failure said, until a step works again.
        self._ledger_fault: str | None = None
        self.last: Attempt | None = None

    def target_epoch(self, now: float) -> int:
        """The epoch to push for at ``now``: the current one, or the next one in the last moments of this one."""
        return protocol.epoch_of(now + self.lead, self.epoch_seconds)

    def _warn_once(self, key: str, epoch: int, level: int, message: str, *args: object) -> None:
        # Once per epoch, so that a lasting condition is logged every epoch but not every step.
        if self._warned.get(key) != epoch:
            self._warned[key] = epoch
            log.log(level, message, *args)

    async def _db(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(call, *args, **kwargs)

    async def step(self, force: bool = False) -> Attempt:
        """Send the pending request, or a new one if the weights changed; report what happened.

        ``force`` sends even unchanged weights: the last acknowledged bytes
        again (the master answers ``idempotent``), for ``base-runner push once``.
        """
        try:
            attempt = await self._step(force)
        except (sqlite3.Error, OSError) as exc:
            attempt = Attempt("error", detail=f"the push ledger {self.store.path} failed: {describe(exc)}")
            # Once per fault, not at every look: a full volume lasts until someone frees it.
            if attempt.detail != self._ledger_fault:
                self._ledger_fault = attempt.detail
                log.error("challenge %s: %s; nothing is sent until it works", self.slug, attempt.detail)
        else:
            if self._ledger_fault is not None:
                self._ledger_fault = None
                log.info("challenge %s: the push ledger %s works again", self.slug, self.store.path)
        self.last = attempt
        if self._on_step is not None:
            self._on_step(attempt)
        if self._report is not None:
            self._report("pusher", await self.state())
        return attempt

    async def _step(self, force: bool) -> Attempt:
        now = time.time()
        epoch = self.target_epoch(now)
        pending = await self._db(self.store.pending)
        if pending is not None and (pending.epoch < epoch or now >= pending.expires_at):
            why = "its epoch ended" if pending.epoch < epoch else "its snapshot expired"
            await self._db(self.store.finish, pending, "abandoned", error=f"{why} before an answer", attempt=False)
            log.warning(
                "challenge %s: gave up the push of epoch %d revision %d: %s before the master acknowledged it",
                self.slug,
                pending.epoch,
                pending.revision,
                why,
            )
            pending = None
        if pending is not None:
            return await self._send(pending)
        if await self._db(self.store.sealed, epoch):
            return Attempt("sealed", detail=f"the master sealed epoch {epoch}")
        if not force and time.monotonic() < self._hold_until:
            return Attempt("waiting", detail="waiting before a new attempt")
        try:
            weights = await self._weights()
        except Exception as exc:
            return Attempt("error", detail=f"no weights to push: {exc}")
        kept = self._pushable(weights, epoch)
        if not kept:
            self._warn_once(
                "empty",
                epoch,
                logging.WARNING,
                "challenge %s: no weights to push for epoch %d; the master withholds the epoch, for every "
                "challenge on the subnet, until this challenge pushes at least one entry",
                self.slug,
                epoch,
            )
            return Attempt("empty", detail=f"no weights to push for epoch {epoch}")
        weights_digest = hashlib.sha256(protocol.canonical(kept)).hexdigest()
        latest = await self._db(self.store.latest, epoch)
        if latest is not None and latest.state == "acknowledged" and latest.weights_digest == weights_digest:
            if not force:
                return Attempt("current", push=latest)
            if now < latest.expires_at:
                return await self._send(latest, replay=True)
        try:
            push = await self._store_new(epoch, now, kept, weights_digest)
        except TooLarge as exc:
            self._warn_once("large", epoch, logging.ERROR, "challenge %s: %s", self.slug, exc)
            return Attempt("error", detail=str(exc))
        return await self._send(push)

    def _pushable(self, weights: Mapping[str, float], epoch: int) -> dict[str, float]:
        kept, dropped = {}, []
        for hotkey, value in weights.items():
            problem = push_problem(hotkey)
            if problem is None:
                kept[hotkey] = float(value)
            else:
                dropped.append(f"{hotkey[:80]!r} ({problem})")
        if dropped:
            self._warn_once(
                "dropped",
                epoch,
                logging.WARNING,
                "challenge %s: %d weights left out of the push of epoch %d, the master refuses their keys: %s",
                self.slug,
                len(dropped),
                epoch,
                ", ".join(dropped[:5]) + (", ..." if len(dropped) > 5 else ""),
            )
        return kept

    async def _store_new(self, epoch: int, now: float, weights: dict[str, float], weights_digest: str) -> Push:
        if len(weights) > protocol.MAX_ENTRIES:
            raise TooLarge(
                f"{len(weights)} weights for epoch {epoch}, over the master's limit of {protocol.MAX_ENTRIES}: "
                "nothing is pushed"
            )
        nonce = f"base-runner-{uuid.uuid4().hex}"
        computed_at = int(now)

        def body_for(revision: int) -> tuple[bytes, str]:
            body = protocol.build_body(
                slug=self.slug,
                epoch=epoch,
                revision=revision,
                computed_at=computed_at,
                lifetime=self.lifetime,
                nonce=nonce,
                weights=weights,
            )
            if len(body) > protocol.MAX_BODY_BYTES:
                raise TooLarge(
                    f"the push of epoch {epoch} is {len(body)} bytes, over the master's limit of "
                    f"{protocol.MAX_BODY_BYTES}: nothing is pushed"
                )
            return body, json.loads(body)["payload_digest"]

        push = await self._db(
            self.store.add,
            epoch=epoch,
            nonce=nonce,
            body_for=body_for,
            weights_digest=weights_digest,
            expires_at=computed_at + self.lifetime,
        )
        log.info(
            "challenge %s: pushing epoch %d revision %d (%d weights) to %s",
            self.slug,
            epoch,
            push.revision,
            len(weights),
            self.master,
        )
        return push

    async def _send(self, push: Push, replay: bool = False) -> Attempt:
        try:
            token = self._token()
        except AuthFailure as exc:
            return await self._retry(push, replay, "refused", None, f"no token to sign with: {exc}")
        timestamp = int(time.time())
        headers = protocol.headers(token=token, path=self.path, slug=self.slug, timestamp=timestamp, body=push.body)
        import httpx  # loaded by pushing(), which made the client

        try:
            response = await self._client.post(self.url, content=push.body, headers=headers)
        except httpx.HTTPError as exc:
            return await self._retry(
                push, replay, "unavailable", None, f"no answer from {self.master}: {describe(exc)}"
            )
        status, detail = response.status_code, _detail(response)
        if 200 <= status < 300:
            try:
                ack = response.json()
            except ValueError:
                ack = None
            problem = protocol.ack_problem(ack, json.loads(push.body))
            if problem is not None:
                return await self._retry(
                    push, replay, "bad_ack", status, f"the master's answer is not an acknowledgement: {problem}"
                )
            self._failures = 0
            outcome = "idempotent" if ack.get("idempotent") is True else "acknowledged"
            await self._finish(
                push,
                replay,
                "acknowledged",
                status=status,
                snapshot_id=ack["snapshot_id"],
                idempotent=outcome == "idempotent",
            )
            log.info(
                "challenge %s: the master acknowledged epoch %d revision %d: snapshot %s%s",
                self.slug,
                push.epoch,
                push.revision,
                ack["snapshot_id"],
                " (it had it already)" if outcome == "idempotent" else "",
            )
            return Attempt(outcome, push=push, status=status, ack=ack)
        if status == 409:
            conflict = "conflict" in detail.lower()
            state = "conflict" if conflict else "sealed"
            await self._finish(push, replay, state, status=status, error=detail)
            if conflict:
                log.error(
                    "challenge %s: the master holds another payload under epoch %d revision %d (%s); "
                    "the next push uses a higher revision",
                    self.slug,
                    push.epoch,
                    push.revision,
                    detail,
                )
            else:
                log.warning(
                    "challenge %s: the master sealed epoch %d before revision %d reached it (%s); "
                    "moving on to the next epoch",
                    self.slug,
                    push.epoch,
                    push.revision,
                    detail,
                )
            self._failures = 0
            return Attempt(state, push=push, status=status, detail=detail)
        if status in (413, 415, 422):
            await self._finish(push, replay, "rejected", status=status, error=detail)
            log.error(
                "challenge %s: the master refused epoch %d revision %d with %d: %s; these bytes are not sent "
                "again, a new snapshot follows in %gs",
                self.slug,
                push.epoch,
                push.revision,
                status,
                detail,
                SLOW_FACTOR * self.interval,
            )
            self._hold_until = time.monotonic() + SLOW_FACTOR * self.interval
            return Attempt("rejected", push=push, status=status, detail=detail)
        if status >= 500:
            return await self._retry(push, replay, "unavailable", status, f"the master answered {status}: {detail}")
        if status == 401:
            why = "the master refused the token (401): check the token file, or this host's clock (30 s window)"
        elif status == 403:
            why = f"the master refused the slug {self.slug!r} (403): deploy the challenge under its own slug"
        else:
            why = f"the master answered {status}: {detail}; check CHALLENGE_MASTER_BASE_URL"
        return await self._retry(push, replay, "refused", status, why)

    async def _finish(self, push: Push, replay: bool, state: str, **fields: object) -> None:
        # A replay of acknowledged bytes never changes what the ledger says of them.
        if not replay:
            await self._db(self.store.finish, push, state, **fields)

    async def _retry(self, push: Push, replay: bool, outcome: str, status: int | None, detail: str) -> Attempt:
        if not replay:
            await self._db(self.store.attempted, push, status, detail)
        self._failures += 1
        log.error(
            "challenge %s: push of epoch %d revision %d: %s; the same bytes are sent again",
            self.slug,
            push.epoch,
            push.revision,
            detail,
        )
        return Attempt(outcome, push=push, status=status, detail=detail)

    def delay(self, attempt: Attempt) -> float:
        """Seconds to wait after ``attempt``: backoff with jitter after a failure, else until the next look."""
        if attempt.outcome in ("unavailable", "bad_ack"):
            return min(self.interval, 0.5 * 2 ** min(self._failures, 16)) * random.uniform(0.5, 1.0)
        if attempt.outcome == "refused":
            return SLOW_FACTOR * self.interval * random.uniform(0.75, 1.0)
        now = time.time()
        # Wake when the target epoch changes, so that each epoch gets its push early.
        boundary = (self.target_epoch(now) + 1) * self.epoch_seconds - self.lead - now
        return max(0.05, min(self.interval, boundary + 0.01))

    async def run(self) -> None:
        """Push until cancelled."""
        log.info(
            "challenge %s: pushing weights to %s every epoch of %ds (a look every %gs)",
            self.slug,
            self.master,
            self.epoch_seconds,
            self.interval,
        )
        while True:
            try:
                attempt = await self.step()
            except Exception as exc:
                # A fault of the pusher's own must not end it, nor the process: the pull path still serves.
                log.error("challenge %s: the pusher failed: %s", self.slug, describe(exc), exc_info=exc)
                attempt = Attempt("error", detail=f"the pusher failed: {describe(exc)}")
            await asyncio.sleep(self.delay(attempt))

    async def state(self) -> dict[str, object]:
        """What ``/ready`` shows: the last acknowledgement, what is pending, the last error."""
        last = self.last
        healthy = last is None or last.ok
        return {
            "status": "ok" if healthy else "degraded",
            "master": self.master,
            **await self._db(ledger, self.store),
            "last_outcome": last.outcome if last else None,
            "error": None if healthy or last is None else last.detail,
        }


def ledger(store: PushStore) -> dict[str, object]:
    """What the ledger says: the last acknowledged epoch, revision and snapshot, and what is pending."""
    acked, pending = store.last_acknowledged(), store.pending()
    return {
        "epoch": acked.epoch if acked else None,
        "revision": acked.revision if acked else None,
        "snapshot_id": acked.snapshot_id if acked else None,
        "pending": pending.view() if pending else None,
    }


@asynccontextmanager
async def pushing(
    *,
    slug: str,
    settings: RunnerSettings,
    weights: Callable[[], Awaitable[Mapping[str, float]]],
    token: Callable[[], str],
    store: PushStore,
    report: Callable[[str, dict[str, object]], None] | None = None,
    on_step: Callable[[Attempt], None] | None = None,
) -> AsyncIterator[Pusher]:
    """Run a :class:`Pusher` in a task for the duration of the block; cancelled on exit.

    A request cut short by the cancellation stays pending in the store and is
    resent by the next process.
    """
    assert settings.master_base_url is not None, "push is off without CHALLENGE_MASTER_BASE_URL"
    # Here, not at module level: a runner that does not push never loads httpx (40 ms and 3 MiB of its start).
    import httpx

    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as client:
        pusher = Pusher(
            slug=slug,
            master_base_url=settings.master_base_url,
            epoch_seconds=settings.epoch_seconds,
            interval=settings.push_interval,
            lifetime=settings.push_snapshot_lifetime,
            weights=weights,
            token=token,
            store=store,
            client=client,
            report=report,
            on_step=on_step,
        )
        task = asyncio.create_task(pusher.run(), name=f"base-runner pusher of {slug}")
        try:
            yield pusher
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task


@asynccontextmanager
async def start_pushing(
    settings: RunnerSettings,
    slug: str,
    cache: WeightsCache,
    auth: MasterAuth,
    runtime: Runtime,
    on_step: Callable[[Attempt], None] | None = None,
) -> AsyncIterator[None]:
    """``serve``'s pusher: the weights the pull endpoint serves, pushed while the app runs.

    ``on_step`` is called with each step's :class:`Attempt` (the metrics count them).
    """
    problem = protocol.slug_problem(slug)
    if problem is not None:
        message = f"cannot push weights for challenge {slug!r}: {problem}"
        log.error("%s", message)
        runtime.publish("pusher", {"status": "degraded", "error": message})
        yield
        return

    async def weights() -> Mapping[str, float]:
        return json.loads(await cache.body())["weights"]

    store = await asyncio.to_thread(PushStore, store_path(settings.data_dir), slug)
    try:
        async with pushing(
            slug=slug,
            settings=settings,
            weights=weights,
            token=auth.expected_token,
            store=store,
            report=runtime.publish,
            on_step=on_step,
        ):
            yield
    finally:
        store.close()
