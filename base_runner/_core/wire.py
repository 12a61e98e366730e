"""The SDK 1.0 wire shapes the runner answers, and the one builder of its error envelope.

Shapes follow BASE's ``challenge_sdk.schemas`` (the 3.1 master's SDK):
``ErrorResponse``, ``HealthResponse`` with its ``HealthCheck`` list and
``VersionResponse``. The bodies are plain dicts built here rather than
pydantic models: they are built on every health probe and every error, and
what they must satisfy is tested against the contract from outside.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, TypedDict

from starlette.responses import JSONResponse

from .correlation import current

API_VERSION = "1.0"
#: The SDK contract version the runner speaks; the 3.1 master refuses an ``sdk_version`` outside ``^1.0.0``.
SDK_CONTRACT_VERSION = "1.0.0"
ROLE = "challenge"
#: What both masters' orchestrators require of ``/version`` (``get_weights``, ``proxy_routes``)
#: and what the platform also knows; the SDK's strict registry knows none of them.
MASTER_CAPABILITIES = ("get_weights", "proxy_routes", "async_sqlalchemy")
#: The SDK registry's challenge capabilities the runner provides: its state routes.
SDK_CAPABILITIES = ("challenge.state",)
#: ``ErrorResponse.detail`` allows at most 512 characters.
MAX_DETAIL = 512

Status = Literal["ok", "degraded", "unhealthy"]
_CODE = re.compile(r"[a-z0-9_]+")


class ErrorBody(TypedDict):
    """``ErrorResponse``: every error the runner answers."""

    code: str
    detail: str
    correlation_id: str
    expected: NotRequired[str]
    actual: NotRequired[str]


class HealthCheck(TypedDict):
    """One part of the runner and its state; a failing ``required`` one makes the runner not ready."""

    name: str
    status: Status
    required: bool


class HealthBody(TypedDict):
    """``HealthResponse``, the body of ``/health`` and ``/ready``."""

    status: Status
    slug: str
    version: str
    role: str
    ready: bool
    capabilities: list[str]
    checks: list[HealthCheck]


def bounded(text: str, limit: int = MAX_DETAIL) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with an ellipsis, and encodable as UTF-8.

    A lone surrogate (a ``\\udc80`` a client sent, echoed in a key) is shown
    escaped: it would make the whole answer unencodable, a 500.
    """
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")[:limit]


def error_response(
    status_code: int,
    code: str,
    detail: str,
    *,
    expected: str | None = None,
    actual: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The ``ErrorResponse`` envelope ``{code, detail, correlation_id, expected?, actual?}`` as a response.

    ``detail`` (and ``expected``/``actual``) are cut to 512 characters; the
    correlation id is the request's (:mod:`base_runner._core.correlation`).

    :param status_code: the HTTP status.
    :param code: a stable machine-readable code, lowercase snake case (``[a-z0-9_]+``).
    :param detail: one sentence for a human: what is wrong and what to do.
    :param expected: the value or version that was expected, when there is one.
    :param actual: the value or version that was received.
    :param headers: extra response headers (``Allow``, ``Retry-After``, ...).
    :raises ValueError: when ``code`` is not lowercase snake case.
    """
    return JSONResponse(error_body(code, detail, expected=expected, actual=actual), status_code, headers=headers)


def error_body(code: str, detail: str, *, expected: str | None = None, actual: str | None = None) -> ErrorBody:
    """The envelope itself, for the layers below FastAPI that send their own bytes; see :func:`error_response`."""
    if not _CODE.fullmatch(code):
        raise ValueError(f"error code {code[:64]!r} is not lowercase snake case ([a-z0-9_]+)")
    body: ErrorBody = {"code": code, "detail": bounded(detail or code), "correlation_id": current()}
    if expected is not None:
        body["expected"] = bounded(expected)
    if actual is not None:
        body["actual"] = bounded(actual)
    return body


def envelope_bytes(body: ErrorBody) -> bytes:
    """``body`` as the bytes a layer below FastAPI sends: compact, as ``JSONResponse`` renders every other answer."""
    return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


@dataclass(eq=False)
class ApiError(Exception):
    """Raise it from a route or a dependency to answer the runner's error envelope.

    ::

        raise ApiError(409, "already_claimed", f"{key} is claimed by another miner")

    The app answers it with :func:`error_response`; the fields are its arguments.
    """

    status_code: int
    code: str
    detail: str
    expected: str | None = None
    actual: str | None = None
    headers: Mapping[str, str] | None = field(default=None, kw_only=True)

    def response(self) -> JSONResponse:
        """This error as the envelope."""
        return error_response(
            self.status_code,
            self.code,
            self.detail,
            expected=self.expected,
            actual=self.actual,
            headers=self.headers,
        )

    def __str__(self) -> str:
        return self.detail


# The codes of the statuses the runner and challenge routes answer most; any other is ``http_<status>``.
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    410: "gone",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "too_many_requests",
    500: "internal_error",
    501: "not_implemented",
    502: "bad_gateway",
    503: "unavailable",
    504: "timeout",
}


def code_for_status(status_code: int) -> str:
    """The envelope code for an error known only by its HTTP status, such as an ``HTTPException``."""
    return _STATUS_CODES.get(status_code, f"http_{status_code}")


#: pydantic's error types for a body that is not an object at all: what a JSON model gets from raw bytes.
_NOT_AN_OBJECT = frozenset({"model_attributes_type", "dict_type", "model_type"})


def body_problem(errors: Sequence[Mapping[str, object]], body: object, content_type: str | None) -> str | None:
    """The one sentence for a body FastAPI could not read as JSON; ``None`` when the body was JSON.

    FastAPI says ``body.0: JSON decode error`` for malformed JSON and, for a
    body sent without a JSON content type (curl's ``-d`` sends a form's), that
    the input "should be a valid dictionary": neither tells the caller what to fix.
    """
    for error in errors:
        loc = error.get("loc", ())
        if not isinstance(loc, tuple | list) or not loc or loc[0] != "body":
            continue
        if error.get("type") == "json_invalid" and isinstance(body, str) and len(loc) > 1 and isinstance(loc[1], int):
            position = loc[1]
            line = body.count("\n", 0, position) + 1
            column = position - body.rfind("\n", 0, position)
            ctx = error.get("ctx")
            reason = ctx.get("error", "") if isinstance(ctx, dict) else ""
            where = f"the body is not valid JSON (line {line}, column {column})"
            return f"{where}: {str(reason)[:100].lower()}" if reason else where
        if error.get("type") in _NOT_AN_OBJECT and len(loc) == 1 and isinstance(body, bytes | bytearray):
            sent = (content_type or "").split(";")[0].strip()
            return "send Content-Type: application/json" + (f" (this body came as {sent[:64]})" if sent else "")
    return None


def validation_detail(errors: Sequence[Mapping[str, Any]], limit: int = MAX_DETAIL) -> str:
    """Which fields failed and why, for a 422; the input itself is never echoed.

    Each error shows its location (each part cut to 40 characters: a key of
    a map is the caller's input) and pydantic's message (200), until ``limit``.
    """
    parts = []
    for error in errors:
        where = ".".join(str(part)[:40] for part in error.get("loc", ()))
        parts.append(f"{where}: {str(error.get('msg', 'invalid'))[:200]}")
    shown = "; ".join(parts) or "the request is invalid"
    return bounded(f"{len(parts)} invalid field{'s' if len(parts) != 1 else ''}: {shown}", limit)


def check(name: str, healthy: bool, *, required: bool = True) -> HealthCheck:
    """One ``HealthCheck``: ``ok`` when healthy, else ``unhealthy`` (required) or ``degraded`` (optional)."""
    status: Status = "ok" if healthy else "unhealthy" if required else "degraded"
    return {"name": name, "status": status, "required": required}


def health_body(slug: str, version: str, checks: Iterable[HealthCheck], capabilities: Sequence[str]) -> HealthBody:
    """``HealthResponse``: ``ready`` and ``status`` follow from ``checks`` as the SDK requires.

    Ready when every required check is ``ok``; ``status`` is ``unhealthy``
    when one is not, ``degraded`` when only an optional one is not, else ``ok``.
    """
    checks = list(checks)
    ready = all(c["status"] == "ok" for c in checks if c["required"])
    status: Status = "unhealthy" if not ready else "degraded" if any(c["status"] != "ok" for c in checks) else "ok"
    return {
        "status": status,
        "slug": slug,
        "version": version,
        "role": ROLE,
        "ready": ready,
        "capabilities": list(capabilities),
        "checks": checks,
    }


_RELEASE = re.compile(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def release_version(version: str) -> str:
    """``x.y.z`` of a package version (``1.2`` → ``1.2.0``, ``0.3.0rc1`` → ``0.3.0``), as ``artifact_version`` needs."""
    match = _RELEASE.match(version)
    if match is None:
        return "0.0.0"
    return ".".join(part or "0" for part in match.groups())


def version_body(
    *, slug: str, distribution: str, version: str, runner_version: str, capabilities: Sequence[str]
) -> dict[str, object]:
    """``VersionResponse`` of a challenge served by the runner, and ``runner_version``.

    The artifact is the challenge's package (its distribution and version);
    ``runner_version`` is base-runner's own version, a field the SDK's strict
    model does not know and neither master reads.
    """
    return {
        "distribution_name": distribution,
        "artifact_version": release_version(version),
        "release_id": f"{distribution}=={version}",
        "api_version": API_VERSION,
        "challenge_slug": slug,
        "challenge_version": version,
        "sdk_contract_version": SDK_CONTRACT_VERSION,
        "sdk_version": SDK_CONTRACT_VERSION,
        "role": ROLE,
        "capabilities": list(capabilities),
        "runner_version": runner_version,
    }
