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
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .._core.errors import describe
from .._core.hotkeys import push_problem
from . import protocol
from .attempt import Attempt, ledger, shown_url
from .sending import SLOW_FACTOR, Sending
from .store import Push, PushStore

if TYPE_CHECKING:
    import httpx

    from .running import PushConfig

log = logging.getLogger("base_runner")


#: Seconds one request may take, connection included.
REQUEST_TIMEOUT = 10.0
#: The longest lead before an epoch starts: the next epoch is pushed this much before it begins.
MAX_LEAD = 10.0


class TooLarge(ValueError):
    """The body would pass the master's size limit; it is never stored nor sent."""


class Pusher(Sending):
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

    @classmethod
    def of(
        cls,
        slug: str,
        config: PushConfig,
        *,
        weights: Callable[[], Awaitable[Mapping[str, float]]],
        token: Callable[[], str],
        store: PushStore,
        client: httpx.AsyncClient,
        report: Callable[[str, dict[str, object]], None] | None = None,
        on_step: Callable[[Attempt], None] | None = None,
    ) -> Pusher:
        """The pusher of ``slug`` as ``config`` says."""
        return cls(
            slug=slug,
            master_base_url=config.master_base_url,
            epoch_seconds=config.epoch_seconds,
            interval=config.interval,
            lifetime=config.lifetime,
            weights=weights,
            token=token,
            store=store,
            client=client,
            report=report,
            on_step=on_step,
        )

    def target_epoch(self, now: float) -> int:
        """The epoch to push for at ``now``: the current one, or the next one in the last moments of this one."""
        return protocol.epoch_of(now + self.lead, self.epoch_seconds)

    def _warn_once(self, key: str, epoch: int, level: int, message: str, *args: object) -> None:
        # Once per epoch, so that a lasting condition is logged every epoch but not every step.
        if self._warned.get(key) != epoch:
            self._warned[key] = epoch
            log.log(level, message, *args)

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
