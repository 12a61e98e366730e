"""Weights: call the challenge, validate what it returns, serialize it once, cache the bytes.

Nothing that is not a finite, non-negative real number ever reaches the
wire: the master treats a body that is not valid JSON, or a 5xx, as a failed
epoch for the challenge.
"""

from __future__ import annotations

import asyncio
import decimal
import inspect
import json
import logging
import math
import numbers
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .._core.errors import describe
from .._core.hotkeys import MAX_HOTKEY_LENGTH

if TYPE_CHECKING:
    from .._core.events import Events
    from .._core.runtime import Runtime
    from .._plugins.plugins import LoadedChallenge

log = logging.getLogger("base_runner")


@dataclass(frozen=True)
class Computed:
    """One ``get_weights`` computation, told to the weights part's observers (the metrics, the traces)."""

    #: ``ok``, ``error``, or ``timeout`` when it ran past the limit, whatever it ended with.
    outcome: str
    seconds: float
    #: What it returned, validated; ``None`` unless ``ok``.
    validated: Validated | None


class WeightsError(Exception):
    """``get_weights`` failed; ``str()`` names the challenge and the fault.

    ``code`` is the error envelope's: ``get_weights_timeout`` for a 504, else ``get_weights_failed``.
    """

    def __init__(self, message: str, status_code: int = 500) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = "get_weights_timeout" if status_code == 504 else "get_weights_failed"


@dataclass
class Validated:
    """A weights map that is safe to send, and what was dropped from it."""

    weights: dict[str, float]
    #: ``(hotkey as repr, reason)`` for every entry left out.
    dropped: list[tuple[str, str]] = field(default_factory=list)


def entry_problem(hotkey: object, value: object) -> str | None:
    """Why one weights entry must not reach the master; ``None`` when it may."""
    if not isinstance(hotkey, str):
        return f"hotkey is a {type(hotkey).__name__}, not a string"
    if not hotkey:
        return "hotkey is empty"
    if len(hotkey) > MAX_HOTKEY_LENGTH:
        return f"hotkey is longer than {MAX_HOTKEY_LENGTH} characters"
    if not hotkey.isprintable():
        # A NUL or a line break in a key splits or ends it in logs, SQL tools and the master's own storage.
        unprintable = next(char for char in hotkey if not char.isprintable())
        return f"hotkey contains the unprintable character U+{ord(unprintable):04X}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real | decimal.Decimal):
        return f"value is a {type(value).__name__}, not a real number"
    number = float(value)
    if math.isnan(number):
        return "value is NaN"
    if math.isinf(number):
        return "value is infinite"
    if number < 0:
        return "value is negative"
    return None


def validate(raw: object, challenge: str) -> Validated:
    """Keep the valid entries of ``raw``; log each dropped one with its hotkey and reason."""
    if not isinstance(raw, dict):
        raise WeightsError(f"challenge {challenge}: get_weights returned a {type(raw).__name__}, not a dict")
    result = Validated(weights={})
    for hotkey, value in raw.items():
        # The usual entry, checked in a fraction of the time entry_problem takes; NaN fails the comparison.
        if (
            type(hotkey) is str
            and type(value) is float
            and 0 < len(hotkey) <= MAX_HOTKEY_LENGTH
            and 0 <= value < math.inf
            and hotkey.isprintable()
        ):
            result.weights[hotkey] = value
            continue
        reason = entry_problem(hotkey, value)
        if reason is None:
            result.weights[hotkey] = float(value)
        else:
            shown = repr(hotkey)[:80]
            log.warning("challenge %s: dropped weight for hotkey %s: %s", challenge, shown, reason)
            result.dropped.append((shown, reason))
    return result


async def call_get_weights(loaded: LoadedChallenge) -> Validated:
    """Call the challenge's ``get_weights``, however long it takes, and validate the result.

    A plain ``def`` runs in a worker thread, off the event loop. Raises
    :class:`WeightsError` naming the challenge when it raises.
    """
    name = loaded.name
    impl = loaded.pm.hook.get_weights.get_hookimpls()[-1].function
    try:
        if inspect.iscoroutinefunction(impl):
            raw = await loaded.pm.hook.get_weights()
        else:
            raw = await asyncio.to_thread(loaded.pm.hook.get_weights)
    except Exception as exc:
        message = f"challenge {name}: get_weights raised {describe(exc)}"
        log.error("%s", message)
        log.debug("get_weights of %s raised", name, exc_info=exc)
        raise WeightsError(message) from exc
    return validate(raw, name)


def timed_out(challenge: str, timeout: float, detail: str = "") -> WeightsError:
    """The 504 for a ``get_weights`` that ran past ``timeout``."""
    log.error("challenge %s: get_weights ran past its %gs timeout%s", challenge, timeout, detail)
    return WeightsError(
        f"challenge {challenge}: get_weights ran past its {timeout:g}s timeout (CHALLENGE_WEIGHTS_TIMEOUT){detail}", 504
    )


def measured(
    compute: Callable[[], Awaitable[Validated]], timeout: float, runtime: Runtime, events: Events[Computed]
) -> Callable[[], Awaitable[Validated]]:
    """``compute``, timed: the ``weights`` part's state is each computation's outcome, told to ``events``.

    A computation that runs past ``timeout`` (the callers got 504) is a
    ``timeout`` whatever it ends with, and the part is down the moment it
    passes the limit, even if it never ends.
    """

    async def timed() -> Validated:
        started = time.perf_counter()
        late = asyncio.get_running_loop().call_later(timeout, runtime.mark, "weights", "timeout", False)
        outcome, validated = "error", None
        try:
            validated = await compute()
            outcome = "ok"
            return validated
        finally:
            late.cancel()
            seconds = time.perf_counter() - started
            if seconds >= timeout:
                outcome = "timeout"
            runtime.mark("weights", outcome, ok=outcome == "ok")
            events.emit(Computed(outcome, seconds, validated if outcome == "ok" else None))

    return timed


async def compute(loaded: LoadedChallenge, timeout: float) -> Validated:
    """Call the challenge's ``get_weights`` within ``timeout`` seconds (cancelled past it) and validate the result."""
    try:
        return await asyncio.wait_for(call_get_weights(loaded), timeout)
    except TimeoutError:
        raise timed_out(loaded.name, timeout) from None


def serialize(slug: str, validated: Validated, now: float | None = None) -> bytes:
    """The weights response body, exactly as the master reads it."""
    now = time.time() if now is None else now
    body = {
        "challenge_slug": slug,
        "epoch": int(now),
        "weights": validated.weights,
        "metadata": {
            "computed_at": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
            # The SDK's WeightsResponse.metadata maps strings to strings.
            "dropped": str(len(validated.dropped)),
        },
    }
    return json.dumps(body, allow_nan=False, separators=(",", ":")).encode()


def map_problems(weights: Mapping[object, object]) -> list[str]:
    """Why the master must not get each invalid entry of ``weights``; empty when all are valid."""
    return [
        f"weight for {str(hotkey)[:80]!r}: {problem}"
        for hotkey, value in weights.items()
        if (problem := entry_problem(hotkey, value)) is not None
    ]


def body_problems(body: object, slug: str | None = None) -> list[str]:
    """Why the master would refuse a decoded weights body (of ``slug``, when given); empty when it would not."""
    if not isinstance(body, dict):
        return [f"the body is a {type(body).__name__}, not a JSON object"]
    problems = []
    given = body.get("challenge_slug")
    if not isinstance(given, str) or not given:
        problems.append(f"challenge_slug is {given!r}, not a slug")
    elif slug is not None and given != slug:
        problems.append(f"challenge_slug is {given!r}, not {slug!r}")
    if not isinstance(body.get("epoch"), int) or isinstance(body["epoch"], bool):
        problems.append(f"epoch is {body.get('epoch')!r}, not an integer")
    weights = body.get("weights")
    if isinstance(weights, dict):
        problems += map_problems(weights)
    else:
        problems.append(f"weights is {type(weights).__name__}, not an object")
    metadata = body.get("metadata")
    computed_at = metadata.get("computed_at") if isinstance(metadata, dict) else None
    try:
        datetime.fromisoformat(str(computed_at))
    except ValueError:
        problems.append(f"metadata.computed_at is {computed_at!r}, not an ISO 8601 time")
    return problems


class WeightsCache:
    """Serialized weights, recomputed only after a committed write or when ``ttl`` runs out.

    Single-flight: at most one ``get_weights`` runs at a time, and every
    caller that finds the cache stale waits for that one computation and
    shares its result or its failure. A caller waits ``timeout`` seconds at
    most (then 504); the computation is never cancelled for it, but goes on
    in the background, and the caller after it gets its result.
    """

    def __init__(
        self,
        slug: str,
        compute: Callable[[], Awaitable[Validated]],
        generation: Callable[[], int],
        ttl: float | None,
        timeout: float,
    ) -> None:
        self._slug = slug
        self._compute = compute
        self._generation = generation
        self._ttl = ttl
        self._timeout = timeout
        self._flight: asyncio.Task[bytes] | None = None
        self._flight_started = 0.0
        self._body: bytes | None = None
        self._body_generation = -1
        self._computed_at = 0.0
        #: Answers served from the cache, and answers that waited for a computation (for the metrics).
        self.hits = 0
        self.misses = 0

    def age(self) -> float | None:
        """Seconds since the cached body was computed; ``None`` before the first computation."""
        return None if self._body is None else time.monotonic() - self._computed_at

    def _fresh(self) -> bytes | None:
        if self._body is None or self._body_generation != self._generation():
            return None
        if self._ttl is not None and time.monotonic() - self._computed_at >= self._ttl:
            return None
        return self._body

    async def body(self) -> bytes:
        """The current body; computes it when stale, or joins the computation under way."""
        body = self._fresh()
        if body is not None:
            self.hits += 1
            return body
        self.misses += 1
        flight = self._flight
        if flight is None:
            flight = self._flight = asyncio.create_task(self._fly(), name=f"{self._slug}:get_weights")
            self._flight_started = time.monotonic()
            # Retrieved here, so a failure that every caller gave up waiting for is not reported twice.
            flight.add_done_callback(lambda task: task.cancelled() or task.exception())
        try:
            return await asyncio.wait_for(asyncio.shield(flight), self._timeout)
        except TimeoutError:
            running = time.monotonic() - self._flight_started
            raise timed_out(
                self._slug,
                self._timeout,
                f"; it has run for {running:.1f}s and goes on in the background, for the next call to use",
            ) from None

    async def _fly(self) -> bytes:
        # Read before computing: a write during the computation leaves the result stale.
        generation = self._generation()
        try:
            body = serialize(self._slug, await self._compute())
        finally:
            self._flight = None
        self._body, self._body_generation, self._computed_at = body, generation, time.monotonic()
        return body

    async def close(self) -> None:
        """Cancel a computation still under way (at shutdown)."""
        flight = self._flight
        if flight is not None:
            flight.cancel()
            await asyncio.gather(flight, return_exceptions=True)
