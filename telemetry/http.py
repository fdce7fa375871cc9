"""HTTP server instrumentation (Litestar's OpenTelemetry plugin) and the Prometheus ``/metrics`` payload."""

from __future__ import annotations

import os
from typing import Any

import httpx2
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server

from telemetry.setup import Telemetry

__all__ = ["METRICS_CONTENT_TYPE", "instrument_http_client", "metrics_payload", "serve_metrics", "server_plugin"]

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


def _route_span_details(scope: Any) -> tuple[str, dict[str, str]]:
    """Name the server span by route template: Litestar's middleware runs after routing, so it is known."""
    route = scope.get("path_template") or scope.get("path", "")
    return f"{scope.get('method', '')} {route}".strip(), {"http.route": route}


def server_plugin(telemetry: Telemetry) -> OpenTelemetryPlugin:
    """Server spans (honouring W3C ``traceparent``, ``tracestate`` and baggage) and ``http.server.request.duration``."""
    # The ASGI instrumentation emits the stable HTTP semantic conventions only when asked.
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    return OpenTelemetryPlugin(
        OpenTelemetryConfig(
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
            scope_span_details_extractor=_route_span_details,
            exclude_spans=["receive", "send"],
            exclude=["^/metrics$"],
        )
    )


def instrument_http_client(client: httpx2.AsyncClient, telemetry: Telemetry) -> httpx2.AsyncClient:
    """Outbound HTTP client spans, and W3C ``traceparent`` on every request to the LLM provider.

    The ``openai`` client sends its requests with ``httpx2``, hence that instrumentor.
    """
    if telemetry.enabled:
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
