"""The SDK 1.0 wire shapes, written from the contract (../shared/base-contract.md), to check answers against.

Strict as the 3.1 master's SDK is: unknown fields are refused, and
``HealthResponse``'s ``ready`` and ``status`` must follow from its checks.
Written independently of ``base_runner._core.wire``, so that a mistake there
cannot hide here.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

Version = Field(pattern=r"^\d+\.\d+\.\d+$")
State = Literal["ok", "degraded", "unhealthy"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ErrorResponse(Strict):
    code: str = Field(pattern=r"^[a-z0-9_]+$")
    detail: str = Field(min_length=1, max_length=512)
    correlation_id: str = Field(min_length=1, max_length=128)
    expected: str | None = None
    actual: str | None = None


class HealthCheck(Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    status: State
    required: StrictBool = True


class HealthResponse(Strict):
    status: State
    slug: str
    version: str
    role: Literal["challenge"]
    ready: StrictBool
    capabilities: list[str]
    checks: list[HealthCheck]

    @model_validator(mode="after")
    def _agrees_with_checks(self) -> HealthResponse:
        names = [c.name for c in self.checks]
        assert len(names) == len(set(names)), f"check names repeat: {names}"
        assert len(self.capabilities) == len(set(self.capabilities)), "capabilities repeat"
        required_ok = all(c.status == "ok" for c in self.checks if c.required)
        assert self.ready == required_ok, f"ready is {self.ready} with checks {self.checks}"
        any_bad = any(c.status != "ok" for c in self.checks)
        expected = "unhealthy" if not required_ok else "degraded" if any_bad else "ok"
        assert self.status == expected, f"status is {self.status}, the checks say {expected}"
        return self


class VersionResponse(Strict):
    distribution_name: str = Field(min_length=1)
    artifact_version: str = Version
    release_id: str = Field(min_length=1)
    api_version: Literal["1.0"]
    challenge_slug: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    challenge_version: str = Field(min_length=1)
    sdk_contract_version: Literal["1.0.0"]
    sdk_version: Literal["1.0.0"]
    role: Literal["challenge"]
    capabilities: list[str]


class WeightsResponse(Strict):
    challenge_slug: str
    epoch: int = Field(ge=0)
    weights: dict[str, float]
    metadata: dict[str, str]

    @model_validator(mode="after")
    def _finite(self) -> WeightsResponse:
        assert all(math.isfinite(v) and v >= 0 for v in self.weights.values())
        return self


#: The one field ``/version`` adds to the SDK's: base-runner's own version.
RUNNER_FIELDS = ("runner_version",)


def version_response(body: dict[str, object]) -> VersionResponse:
    """``body`` as a ``VersionResponse``, once the runner's own field is set apart."""
    return VersionResponse.model_validate({k: v for k, v in body.items() if k not in RUNNER_FIELDS})


def without_id(body: dict[str, object]) -> dict[str, object]:
    """An error envelope, checked against ``ErrorResponse``, without its per-request ``correlation_id``."""
    ErrorResponse.model_validate(body)
    return {k: v for k, v in body.items() if k != "correlation_id"}


def invalid_fields(body: dict[str, object], *locs: list[str | int]) -> str:
    """The detail of a 422 envelope, checked to name each field at ``locs`` (``["body", "score"]``)."""
    error = ErrorResponse.model_validate(body)
    assert error.code == "validation_failed", error
    for loc in locs:
        assert ".".join(str(part) for part in loc) + ": " in error.detail, (loc, error.detail)
    return error.detail


def reasons_of(client) -> list[str]:
    """Every reason the runner gives for a failing check, from ``/internal/status`` (HealthResponse has none)."""
    return [reason for check in client.get("/internal/status").json()["checks"].values() for reason in check["reasons"]]
