"""Optional OpenTelemetry tracing for ``serve``: requests, ``get_weights`` and SQL, sent over OTLP/HTTP.

On when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``
is set and the ``otel`` extra is installed. Every other setting is the SDK's
own ``OTEL_*`` variables (service name, sampler, batching, headers, timeout),
which the SDK reads itself. While tracing is off, this module imports nothing
of OpenTelemetry (only :func:`start`, once it finds an endpoint, and the
methods of the :class:`Tracing` it returns do) and the app gets no layer more.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .access import UNMATCHED, route_of

if TYPE_CHECKING:
    from .._core.events import Events
    from .._storage.db import Database
    from .._weights.weights import Computed, Validated

log = logging.getLogger("base_runner")

#: Either turns tracing on, as the OTLP exporter reads them: the first one wins.
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
INSTALL = "pip install 'base-runner[otel]'"
#: Request headers never recorded, whatever OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST asks:
#: the master's token and the owner token travel in them.
SECRET_HEADERS = ("authorization", "proxy-authorization", "cookie", "x-owner-token")
#: The span around each ``get_weights`` computation; its outcome is the ``weights`` part's state.
WEIGHTS_SPAN = "get_weights"
OUTCOME_ATTRIBUTE = "base_runner.get_weights.outcome"
#: The collector's credentials, as the OTLP exporter reads them: the first one set wins.
HEADER_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")

# What withhold_credentials took out of the environment, for start's exporter alone.
_withheld: dict[str, str] = {}


def withhold_credentials() -> None:
    """Take the collector's headers out of the environment, before any challenge code runs.

    They often carry an API key of the operator's tracing backend: a
    control-plane credential, which challenge code must not read from
    ``os.environ``. :func:`start` hands them to the exporter itself.
    """
    for name in HEADER_VARIABLES:
        if name in os.environ:
            _withheld[name] = os.environ.pop(name)


def start(slug: str, version: str) -> Tracing | None:
    """The process's tracing when an OTLP endpoint is set and OpenTelemetry is installed, else ``None``.

    An endpoint without the packages logs one warning and serves untraced.
    """
    variable = next((name for name in ENDPOINT_VARIABLES if os.environ.get(name, "").strip()), None)
    if variable is None:
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        log.warning(
            "%s is set, but tracing is off: OpenTelemetry is not installed (no module %s); install it with %s",
            variable,
            exc.name,
            INSTALL,
        )
        return None
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; they win over the defaults here.
    detected = Resource.create()
    defaults: dict[str, str] = {}
    if str(detected.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        defaults[SERVICE_NAME] = f"base-runner-{slug}"
    if SERVICE_VERSION not in detected.attributes:
        defaults[SERVICE_VERSION] = version
    resource = detected.merge(Resource(defaults))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(headers=_exporter_headers())))
    # Global, so that a challenge's own trace.get_tracer(...) spans join the request's trace.
    trace.set_tracer_provider(provider)
    log.info("tracing to %s as %s", variable, resource.attributes[SERVICE_NAME])
    return Tracing(provider)


def _exporter_headers() -> dict[str, str] | None:
    """The withheld headers as the exporter would have parsed them; ``None`` leaves it to read the environment."""
    from opentelemetry.util.re import parse_env_headers

    given = next((_withheld[name] for name in HEADER_VARIABLES if name in _withheld), None)
    return None if given is None else dict(parse_env_headers(given, liberal=True))


class Tracing:
    """One process's tracer provider, and the layers that put spans on the runner's parts."""

    def __init__(self, provider: Any) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("base_runner")

    def wrap(self, app: ASGIApp, fast_paths: Collection[str]) -> ASGIApp:
        """``app`` inside a server span per HTTP request, named after the route template that answered."""
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from opentelemetry.util.http import (
            OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS,
            get_custom_headers,
            get_excluded_urls,
            sanitize_method,
        )

        def method(scope: Scope) -> str:
            sanitized = sanitize_method(scope["method"])
            # The semantic conventions' name for a method outside the known set.
            return "HTTP" if sanitized == "_OTHER" else sanitized

        return OpenTelemetryMiddleware(
            _RouteNamed(app, fast_paths, method),
            # OTEL_PYTHON_ASGI_EXCLUDED_URLS, else OTEL_PYTHON_EXCLUDED_URLS.
            excluded_urls=get_excluded_urls("ASGI"),
            # The default names a span after the raw path, hotkeys included; _RouteNamed renames it.
            default_span_details=lambda scope: (method(scope), {}),
            tracer_provider=self._provider,
            http_capture_headers_sanitize_fields=[
                *get_custom_headers(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS),
                *SECRET_HEADERS,
            ],
            # A span for each ASGI message would outnumber the request's own.
            exclude_spans=["receive", "send"],
        )

    def instrument(self, db: Database) -> None:
        """Put a span on each statement of ``db``'s engines (and on every engine created after)."""
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        SQLAlchemyInstrumentor().instrument(
            engines=[db.engine.sync_engine, db.read_engine.sync_engine],
            tracer_provider=self._provider,
            # The package declares SQLAlchemy < 2.1; the runner needs 2.1, whose engine events it
            # hooks are unchanged (tests/test_tracing.py checks the spans).
            skip_dep_check=True,
        )

    def traced_weights(
        self, compute: Callable[[], Awaitable[Validated]], events: Events[Computed]
    ) -> Callable[[], Awaitable[Validated]]:
        """``compute`` in a span that records its outcome, as ``events`` tell it: ``ok``, ``error``, ``timeout``."""
        from opentelemetry.trace import StatusCode, get_current_span

        def record(computed: Computed) -> None:
            # Told inside the computation, so inside its span.
            span = get_current_span()
            if computed.validated is not None:
                span.set_attributes(
                    {
                        "base_runner.weights.entries": len(computed.validated.weights),
                        "base_runner.weights.dropped": len(computed.validated.dropped),
                    }
                )
            span.set_attribute(OUTCOME_ATTRIBUTE, computed.outcome)
            if computed.outcome != "ok":
                span.set_status(StatusCode.ERROR, f"get_weights: {computed.outcome}")

        events.subscribe(record)

        async def traced() -> Validated:
            with self._tracer.start_as_current_span(WEIGHTS_SPAN):
                return await compute()

        return traced

    async def shutdown(self) -> None:
        """Export the spans still queued and stop; within OTEL_EXPORTER_OTLP_TIMEOUT when the collector is away."""
        # The export is a blocking HTTP call: off the loop, which is still closing the database.
        await asyncio.to_thread(self._provider.shutdown)


class _RouteNamed:
    """Renames the request's server span ``METHOD /route/{template}`` as its answer starts.

    Not later: the span ends with the answer's last byte. A request no route
    matched keeps the bare method, as the semantic conventions name it:
    never its path.
    """

    def __init__(self, app: ASGIApp, fast_paths: Collection[str], method: Callable[[Scope], str]) -> None:
        from opentelemetry.trace import get_current_span

        self._app = app
        self._fast = frozenset(fast_paths)
        self._method = method
        self._current_span = get_current_span

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        span = self._current_span()

        async def naming(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = route_of(scope, self._fast)
                if route != UNMATCHED:
                    span.update_name(f"{self._method(scope)} {route}")
                    span.set_attribute("http.route", route)
            await send(message)

        await self._app(scope, receive, naming)
