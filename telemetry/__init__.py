"""Telemetry for ragwatch: the only package that talks to OpenTelemetry.

``service/`` calls the helpers here and never configures the SDK itself.
"""

from __future__ import annotations

from opentelemetry import trace

__all__ = ["current_trace_id"]


def current_trace_id() -> str:
    """The W3C trace id of the active span as 32 hex digits, or 32 zeros when nothing is traced."""
    return format(trace.get_current_span().get_span_context().trace_id, "032x")
