"""Refuse, with a 422 naming the field, request values SQLite cannot hold or the runner cannot answer back.

SQLite's integers are 64-bit and its text is UTF-8: an integer outside
``[-2^63, 2^63)`` or a string with a lone surrogate (``"\\ud800"``, valid
JSON, not valid UTF-8) makes the driver raise, a 500 on whatever route
stored it. A value nested deeper than pydantic serializes is stored fine and
then breaks every response that reads it back. Every challenge route's
endpoint is wrapped so that the values it is called with are checked first,
whatever bounds its author declared.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_GUARDED = "__base_runner_guarded__"

Loc = tuple[str | int, ...]


def unstorable(value: object, loc: Loc, max_depth: int) -> tuple[Loc, str] | None:
    """Where in ``value`` (found at ``loc``) the first value the runner cannot store or answer is, and why."""
    # Iterative: a value nested as deep as the parser allowed must not exhaust the stack here.
    pending: list[tuple[object, Loc, int]] = [(value, loc, 0)]
    while pending:
        item, where, depth = pending.pop()
        if isinstance(item, bool | float) or item is None:
            continue
        if isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                return where, "integer out of range: the database holds integers from -2^63 to 2^63-1"
            continue
        if isinstance(item, str):
            if not item.isascii() and _has_surrogate(item):
                return where, "string contains a lone surrogate (U+D800 to U+DFFF), which is not UTF-8"
            continue
        children = _children(item)
        if children is None:
            continue
        if depth >= max_depth:
            return where, f"value is nested deeper than {max_depth} levels (CHALLENGE_MAX_JSON_DEPTH)"
        for key, child in children:
            if isinstance(key, str) and not key.isascii() and _has_surrogate(key):
                return (*where, key), "key contains a lone surrogate (U+D800 to U+DFFF), which is not UTF-8"
            pending.append((child, (*where, key), depth + 1))
    return None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _children(item: object) -> Iterable[tuple[str | int, object]] | None:
    if isinstance(item, BaseModel):
        fields = type(item).model_fields
        return [(field.alias or name, getattr(item, name)) for name, field in fields.items()]
    if isinstance(item, dict):
        return [(key if isinstance(key, str | int) else repr(key), child) for key, child in item.items()]
    if isinstance(item, list | tuple | set | frozenset):
        return list(enumerate(item))
    return None


class _Guard:
    """The checks of one endpoint: where each of its parameters comes from, and the depth allowed."""

    def __init__(self, route: APIRoute, max_depth: int) -> None:
        self.max_depth = max_depth
        #: Parameter name → its location as FastAPI reports it: ``("query", "limit")``, ``("body",)``.
        self.locations: dict[str, Loc] = {}
        dependant = route.dependant
        for kind, fields in (
            ("path", dependant.path_params),
            ("query", dependant.query_params),
            ("header", dependant.header_params),
            ("cookie", dependant.cookie_params),
        ):
            for field in fields:
                self.locations[field.name] = (kind, field.alias)
        embedded = route._embed_body_fields  # FastAPI's own rule for the body's loc
        for field in dependant.body_params:
            self.locations[field.name] = ("body", field.alias) if embedded else ("body",)

    def check(self, arguments: dict[str, Any]) -> None:
        for name, loc in self.locations.items():
            if name in arguments and (found := unstorable(arguments[name], loc, self.max_depth)) is not None:
                where, message = found
                raise RequestValidationError([{"type": "unstorable_value", "loc": where, "msg": message}])


def _guarded(endpoint: Callable[..., Any], guard: _Guard) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(endpoint):

        @functools.wraps(endpoint)
        async def guarded(**arguments: Any) -> Any:
            guard.check(arguments)
            return await endpoint(**arguments)

    else:

        @functools.wraps(endpoint)
        def guarded(**arguments: Any) -> Any:
            guard.check(arguments)
            return endpoint(**arguments)

    setattr(guarded, _GUARDED, guard)
    return guarded


def guard_routes(router: APIRouter, max_depth: int) -> None:
    """Check the arguments of each endpoint of ``router`` with :func:`unstorable` before it runs.

    Call it before ``app.include_router(router)``: FastAPI builds the app's
    routes from the endpoints, whose signatures the wrappers keep
    (``functools.wraps``). Guarding a router again only updates ``max_depth``.
    """
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        guard = getattr(route.endpoint, _GUARDED, None)
        if guard is not None:
            guard.max_depth = max_depth
        else:
            route.endpoint = _guarded(route.endpoint, _Guard(route, max_depth))
