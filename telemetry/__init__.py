"""Telemetry for ragwatch: the only package that talks to OpenTelemetry.

``service/`` builds a :class:`Telemetry` with :func:`setup_telemetry` and calls the helpers here; it never
configures the SDK itself.
"""

from __future__ import annotations

from opentelemetry import trace

from telemetry.context import update_request
from telemetry.instruments import Instruments
from telemetry.setup import Telemetry, TelemetryOptions, disabled_telemetry, setup_telemetry
from telemetry.spans import GenAICall, db_query, describe_stage, genai_call, stage

__all__ = [
    "GenAICall",
    "Instruments",
    "Telemetry",
    "TelemetryOptions",
    "current_trace_id",
    "db_query",
    "describe_stage",
    "disabled_telemetry",
    "genai_call",
    "setup_telemetry",
    "stage",
    "update_request",
]


def current_trace_id() -> str:
    """The W3C trace id of the active span as 32 hex digits, or 32 zeros when nothing is traced."""
    return format(trace.get_current_span().get_span_context().trace_id, "032x")
