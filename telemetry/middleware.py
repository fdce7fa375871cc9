"""Per-request telemetry that the OpenTelemetry ASGI middleware does not give: the ``traceresponse`` header,
``rag_requests_total`` / ``rag_request_duration_seconds`` by route template, and one access-log record.

Installed as Litestar middleware, it runs after routing, so ``scope["path_template"]`` names the route
(``/v1/knowledge-bases/{kb_id}``) rather than the raw path with its ids.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import format_span_id, format_trace_id

from telemetry.context import RequestContext, enter_request, leave_request
from telemetry.setup import Telemetry

__all__ = ["RequestTelemetryMiddleware"]

access_log = logging.getLogger("ragwatch.access")
_QUIET_PREFIXES = ("/health/",)  # probes: logged at DEBUG (scrapes of /metrics are skipped altogether)


class RequestTelemetryMiddleware:
    def __init__(self, app: Any, telemetry: Telemetry) -> None:
        self.app = app
        self._instruments = telemetry.instruments

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path_template") == "/metrics":
            # Scrapes are not traffic: they would skew the request rate and the SLOs built on it.
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"]
        route = scope.get("path_template") or scope["path"]
        span = trace.get_current_span()
        span_context = span.get_span_context()
        context = RequestContext(method=method, route=route, server_span=span if span_context.is_valid else None)
        token = enter_request(context)
        header = (
            f"00-{format_trace_id(span_context.trace_id)}-{format_span_id(span_context.span_id)}-"
            f"{span_context.trace_flags:02x}".encode()
            if span_context.is_valid
            else None
        )
        status = 500

        async def send_with_trace(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if header is not None:
                    message["headers"] = [*message.get("headers", ()), (b"traceresponse", header)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace)
        except Exception as exc:  # answered by an outer exception handler: count it with its own status
            status = getattr(exc, "status_code", 0) or getattr(exc, "status", 500)
            raise
        finally:
            elapsed = time.perf_counter() - started
            self._instruments.requests.add(1, {"method": method, "endpoint": route, "status": str(status)})
            self._instruments.request_duration.record(elapsed, {"method": method, "endpoint": route})
            access_log.log(
                logging.DEBUG if route.startswith(_QUIET_PREFIXES) else logging.INFO,
                "%s %s %s",
                method,
                route,
                status,
                extra={"http.response.status_code": status, "latency_ms": round(elapsed * 1000, 2)},
            )
            leave_request(token)
