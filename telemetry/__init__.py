"""Telemetry for ragwatch: the only package that talks to OpenTelemetry.

``service/`` builds a :class:`Telemetry` with :func:`setup_telemetry` and calls the helpers here; it never
configures the SDK itself.
"""

from __future__ import annotations

from opentelemetry import trace

from telemetry.context import answer_span_id, update_request
from telemetry.evaluations import (
    count_answer,
    probe_run,
    record_answer_quality,
    record_feedback,
    record_probe_run,
)
from telemetry.instruments import Instruments
from telemetry.quality import QualityInstruments, emit_evaluation, span_context_of
from telemetry.setup import Telemetry, TelemetryOptions, disabled_telemetry, setup_telemetry
from telemetry.spans import GenAICall, db_query, describe_stage, genai_call, stage

__all__ = [
    "GenAICall",
    "Instruments",
    "QualityInstruments",
    "Telemetry",
    "TelemetryOptions",
    "answer_span_id",
    "count_answer",
    "current_trace_id",
    "db_query",
    "describe_stage",
    "disabled_telemetry",
    "emit_evaluation",
    "genai_call",
    "probe_run",
    "record_answer_quality",
    "record_feedback",
    "record_probe_run",
    "setup_telemetry",
    "span_context_of",
    "stage",
    "update_request",
]


def current_trace_id() -> str:
    """The W3C trace id of the active span as 32 hex digits, or 32 zeros when nothing is traced."""
    return format(trace.get_current_span().get_span_context().trace_id, "032x")
