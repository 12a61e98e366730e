"""The answers the runner itself gives on a challenge's routes, added to the challenge's OpenAPI document.

A client (or Schemathesis) reading ``/openapi.json`` then knows every
status a route can answer: the challenge's own, and the runner's limits,
refusals and failures around it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from .limits import AUTHENTICATED_PREFIX

#: The body of every error the runner answers: the SDK 1.0 ``ErrorResponse`` (:func:`base_runner.error_response`).
ERROR_SCHEMA: dict[str, Any] = {
    "title": "ErrorResponse",
    "type": "object",
    "required": ["code", "detail", "correlation_id"],
    "properties": {
        "code": {"type": "string", "pattern": "^[a-z0-9_]+$"},
        "detail": {"type": "string", "minLength": 1, "maxLength": 512},
        "correlation_id": {"type": "string", "minLength": 1, "maxLength": 128},
        "expected": {"type": "string", "maxLength": 512},
        "actual": {"type": "string", "maxLength": 512},
    },
}

_EVERY_ROUTE = {
    "400": "A credential header sent twice, or a body that is not valid JSON",
    "408": "The request's headers or body did not arrive in time (CHALLENGE_HEADER_TIMEOUT, CHALLENGE_BODY_TIMEOUT)",
    "431": "The request's headers are too many or too large (CHALLENGE_MAX_HEADERS, CHALLENGE_MAX_HEADER_BYTES)",
    "500": "The challenge failed; the runner logs the fault",
    "503": "Every connection is busy (CHALLENGE_MAX_CONNECTIONS), or the runner is not ready",
}
_WITH_BODY = {"413": "The body is larger than CHALLENGE_MAX_BODY_BYTES"}
_MASTER_ONLY = {"401": "The master's bearer token is missing or wrong"}
_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})


def document_runner_answers(app: FastAPI) -> None:
    """Make ``app.openapi()`` list, on every operation, the statuses the runner may answer there."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _add_runner_answers(build())
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _add_runner_answers(schema: dict[str, Any]) -> None:
    schema.setdefault("components", {}).setdefault("schemas", {})["ErrorResponse"] = ERROR_SCHEMA
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in _METHODS:
                continue
            answers = dict(_EVERY_ROUTE)
            if "requestBody" in operation:
                answers.update(_WITH_BODY)
            if path.startswith(AUTHENTICATED_PREFIX):
                answers.update(_MASTER_ONLY)
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                # FastAPI documents its own 422 body; the runner answers the envelope instead.
                responses["422"]["content"] = content
            for status, description in answers.items():
                # The challenge's own description of a status wins.
                responses.setdefault(status, {"description": description, "content": content})
