"""HTTP server instrumentation (Litestar's OpenTelemetry plugin) and the Prometheus ``/metrics`` payload."""

from __future__ import annotations

from typing import Any

import httpx2
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from litestar.utils import normalize_path
from opentelemetry import context, propagate
from opentelemetry.instrumentation.asgi import asgi_getter
from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server

from telemetry.setup import Telemetry, use_stable_semantic_conventions

__all__ = [
    "METRICS_CONTENT_TYPE",
    "TraceContextPassthrough",
    "instrument_http_client",
    "metrics_payload",
    "serve_metrics",
    "server_plugin",
]

# Without its charset: Litestar appends ``charset=utf-8`` to every text response itself.
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST.replace("; charset=utf-8", "")


def route_template(scope: Any) -> str | None:
    """The template of the route ``scope`` goes to (``/v1/knowledge-bases/{kb_id}``), or ``None`` for no route.

    The OpenTelemetry middleware wraps Litestar's router, so it runs before routing has set
    ``scope["path_template"]``: the template is looked up the way the router is about to (its cached lookup).
    """
    template = scope.get("path_template")
    if template:
        return str(template)
    app = scope.get("litestar_app")
    if app is None:
        return None
    path = scope.get("path", "")
    if root_path := scope.get("root_path", ""):
        path = path.split(root_path, maxsplit=1)[-1]
    try:
        *_, template = app.asgi_router.handle_routing(path=normalize_path(path), method=scope.get("method"))
    except Exception:  # no such route (404) or method (405): the router answers that itself
        return None
    return str(template) if template else None


def _route_span_details(scope: Any) -> tuple[str, dict[str, str]]:
    """Name the server span ``{method} {route template}``, never by the raw path with its ids.

    A request that matches no route is named by its method alone, without ``http.route`` (semantic conventions).
    """
    method = scope.get("method", "")
    route = route_template(scope)
    if route is None:
        return method or "HTTP", {}
    return f"{method} {route}".strip(), {"http.route": route}


def server_plugin(telemetry: Telemetry) -> OpenTelemetryPlugin:
    """Server spans (honouring W3C ``traceparent``, ``tracestate`` and baggage) and ``http.server.request.duration``."""
    use_stable_semantic_conventions()
    return OpenTelemetryPlugin(
        OpenTelemetryConfig(
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
            scope_span_details_extractor=_route_span_details,
            exclude_spans=["receive", "send"],
            exclude=["^/metrics$"],
        )
    )


class TraceContextPassthrough:
    """With the SDK disabled, in place of :func:`server_plugin`: the caller's W3C trace context and baggage stay
    current for the request, so the answer's ``trace_id``, ``traceresponse`` and outgoing calls carry them on.

    That is all the OpenTelemetry middleware would do without an SDK, at a fraction of its cost per request.
    """

    _HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not any(name in self._HEADERS for name, _ in scope["headers"]):
            await self.app(scope, receive, send)
            return
        token = context.attach(propagate.extract(scope, getter=asgi_getter))
        try:
            await self.app(scope, receive, send)
        finally:
            context.detach(token)


def instrument_http_client(client: httpx2.AsyncClient, telemetry: Telemetry) -> httpx2.AsyncClient:
    """Outbound HTTP client spans, and W3C ``traceparent`` on every request to the LLM provider.

    The ``openai`` client sends its requests with ``httpx2``, hence that instrumentor.
    """
    if telemetry.enabled:
        use_stable_semantic_conventions()
        HTTPX2ClientInstrumentor.instrument_client(
            client,  # type: ignore[arg-type]  # its signature names httpx's classes, yet it wraps httpx2's
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
        )
    return client


def serve_metrics(telemetry: Telemetry, host: str, port: int) -> None:
    """``/metrics`` on its own port, from a background thread (``RAGWATCH_METRICS_PORT``)."""
    if telemetry.registry is not None:
        start_http_server(port, addr=host, registry=telemetry.registry)


def metrics_payload(telemetry: Telemetry) -> bytes:
    return generate_latest(telemetry.registry) if telemetry.registry is not None else b""
