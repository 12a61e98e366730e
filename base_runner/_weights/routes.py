"""The weights routes as bare ASGI endpoints, so that they answer at close to a bare server's speed.

A FastAPI route that returns the cached bytes spends most of each request in
FastAPI (its middleware, routing, request and response objects), not in
sending the body: it was measured at 0.3x a bare ASGI app's throughput, these
endpoints at 0.7x to 0.9x (docs/performance.md).
:class:`~base_runner._http.app.RunnerApp` hands ``GET`` on these paths to these
endpoints before FastAPI sees the request.
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from .._core.auth import MasterAuth
from .._core.secrets import AuthFailure
from .._core.wire import error_response
from .weights import WeightsCache, WeightsError

PUBLIC_PATH = "/weights"
INTERNAL_PATH = "/internal/v1/get_weights"


def _header_dict(scope: Scope) -> dict[str, str]:
    """The request's headers by (lower-case) name, the first of a repeated one winning, as Starlette's ``Headers``.

    One pass over them, where the token and slug checks' lookups in
    ``Headers`` scan them once each: 2 µs of the master's cached answer.
    """
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(scope["headers"])}


class WeightsEndpoint:
    """An ASGI app answering the cached weights body; with ``auth``, only to the master.

    Refusals and failures answer the error envelope, as every other route,
    with the status and code of the :class:`AuthFailure` or :class:`WeightsError`.
    """

    def __init__(self, cache: WeightsCache, auth: MasterAuth | None = None) -> None:
        self._cache = cache
        self._auth = auth
        self._body = b""
        self._headers: list[tuple[bytes, bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._auth is not None:
            try:
                self._auth.check(_header_dict(scope))
            except AuthFailure as failure:
                await failure.response()(scope, receive, send)
                return
        try:
            body = await self._cache.body()
        except WeightsError as exc:
            await error_response(exc.status_code, exc.code, str(exc))(scope, receive, send)
            return
        if body is not self._body:
            # Built once per computed body, not once per request.
            self._body = body
            self._headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": self._headers})
        await send({"type": "http.response.body", "body": body})


def weights_endpoints(cache: WeightsCache, auth: MasterAuth) -> dict[str, WeightsEndpoint]:
    """The public and the master's weights endpoints, by path."""
    return {PUBLIC_PATH: WeightsEndpoint(cache), INTERNAL_PATH: WeightsEndpoint(cache, auth)}
