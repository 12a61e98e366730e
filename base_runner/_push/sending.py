"""How the pusher sends one stored request and reads the master's answer: each status has its meaning."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from .._core.errors import describe
from .._core.secrets import AuthFailure
from . import protocol
from .attempt import Attempt, detail_of
from .store import Push, PushStore

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("base_runner")

P = ParamSpec("P")
T = TypeVar("T")

#: Slow retries (the master refused the token or slug, or these bytes) wait this many push intervals.
SLOW_FACTOR = 4


class Sending:
    """The sending half of :class:`~base_runner._push.pusher.Pusher`: one request out, its answer recorded."""

    slug: str
    path: str
    url: str
    master: str
    interval: float
    store: PushStore
    _client: httpx.AsyncClient
    _token: Callable[[], str]
    _failures: int
    _hold_until: float

    async def _db(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(call, *args, **kwargs)

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
        status, detail = response.status_code, detail_of(response)
        if 200 <= status < 300:
            return await self._acknowledged(push, replay, response)
        if status == 409:
            return await self._conflict(push, replay, status, detail)
        if status in (413, 415, 422):
            return await self._rejected(push, replay, status, detail)
        if status >= 500:
            return await self._retry(push, replay, "unavailable", status, f"the master answered {status}: {detail}")
        if status == 401:
            why = "the master refused the token (401): check the token file, or this host's clock (30 s window)"
        elif status == 403:
            why = f"the master refused the slug {self.slug!r} (403): deploy the challenge under its own slug"
        else:
            why = f"the master answered {status}: {detail}; check CHALLENGE_MASTER_BASE_URL"
        return await self._retry(push, replay, "refused", status, why)

    async def _acknowledged(self, push: Push, replay: bool, response: httpx.Response) -> Attempt:
        status = response.status_code
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

    async def _conflict(self, push: Push, replay: bool, status: int, detail: str) -> Attempt:
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

    async def _rejected(self, push: Push, replay: bool, status: int, detail: str) -> Attempt:
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
