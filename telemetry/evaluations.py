"""What the service reports about the quality of its answers: the signals of each answer made, each answer
served, and user feedback (the instruments and the event are in :mod:`telemetry.quality`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span

from telemetry.context import mark_answer_span
from telemetry.quality import emit_evaluation, span_context_of
from telemetry.setup import Telemetry

__all__ = ["count_answer", "probe_run", "record_answer_quality", "record_feedback", "record_probe_run"]


def record_answer_quality(
    telemetry: Telemetry,
    span: Span,
    tenant_id: str,
    *,
    outcome: str,
    top_score: float | None,
    groundedness: float | None,
    citation_coverage: float | None,
    synthetic: bool = False,
    response_id: str | None = None,
) -> None:
    """An answer's quality signals on its span, and, unless it answered a probe (``synthetic``), in the
    histograms and as ``gen_ai.evaluation.result`` events in the span's context."""
    scores = {
        "rag.retrieval.top_score": top_score,
        "rag.answer.groundedness": groundedness,
        "rag.answer.citation_coverage": citation_coverage,
    }
    mark_answer_span(span)
    if span.is_recording():
        span.set_attribute("rag.answer.outcome", outcome)
        for attribute, value in scores.items():
            if value is not None:
                span.set_attribute(attribute, round(value, 4))
    if synthetic:
        return
    quality = telemetry.quality
    tenant = {"tenant": quality.tenant_label(tenant_id)}
    context = trace.set_span_in_context(span)
    for histogram, evaluation, value in (
        (quality.top_score, "retrieval_top_score", top_score),
        (quality.groundedness, "groundedness", groundedness),
        (quality.citation_coverage, "citation_coverage", citation_coverage),
    ):
        if value is not None:
            histogram.record(value, tenant)
            emit_evaluation(telemetry.events, context, evaluation, value=round(value, 4), response_id=response_id)


def record_feedback(
    telemetry: Telemetry,
    *,
    trace_id: str,
    span_id: str,
    tenant_id: str,
    kb_id: str,
    user_id: str,
    rating: str,
    comment: str,
    counted: bool = True,
) -> None:
    """Feedback on an answer: counted, and a ``ragwatch.feedback`` log record and a ``user_feedback``
    evaluation event in the answer's own trace and span (so Tempo and Loki show it beside the answer). The
    comment is never a label, and is logged only with ``RAGWATCH_CAPTURE_CONTENT=true`` (else its length)."""
    quality = telemetry.quality
    if counted:
        quality.feedback.add(1, {**quality.labels(tenant_id, kb_id), "rating": rating})
    context = span_context_of(trace_id, span_id)
    attributes: dict[str, str | int] = {
        "rag.feedback.rating": rating,
        "rag.tenant.id": tenant_id,
        "rag.kb.id": kb_id,
        "user.id": user_id,
        "rag.feedback.comment_length": len(comment),
    }
    if telemetry.capture_content and comment:
        attributes["rag.feedback.comment"] = comment
    telemetry.events.emit(
        event_name="ragwatch.feedback", context=context, body=f"feedback {rating}", attributes=attributes
    )
    emit_evaluation(telemetry.events, context, "user_feedback", value=1.0 if rating == "up" else 0.0, label=rating)


def count_answer(telemetry: Telemetry, tenant_id: str, kb_id: str, outcome: str) -> None:
    """One answer served (``answered``, ``no_answer``) or failed (``error``): ``rag_answers_total``."""
    quality = telemetry.quality
    quality.answers.add(1, {**quality.labels(tenant_id, kb_id), "outcome": outcome})


def record_probe_run(
    telemetry: Telemetry,
    span: Span,
    *,
    kb_id: str,
    probe_id: str,
    result: str,
    duration_s: float,
    error_type: str | None = None,
) -> None:
    """A golden-question probe's run: ``rag_probe_success``, ``rag_probe_runs_total``, its duration, the result
    on its span, and a ``golden_probe`` evaluation event (``pass``/``fail``) in the span's context."""
    quality = telemetry.quality
    quality.probes.set(kb_id, probe_id, result == "pass")
    quality.probe_runs.add(1, {"result": result})
    quality.probe_duration.record(duration_s)
    if span.is_recording():
        span.set_attribute("rag.probe.result", result)
    context = trace.set_span_in_context(span)
    if result == "error":  # the evaluation itself failed: no score, its error.type
        emit_evaluation(telemetry.events, context, "golden_probe", attributes={"error.type": error_type or "error"})
    else:
        value = float(result == "pass")
        emit_evaluation(telemetry.events, context, "golden_probe", value=value, label=result)


@contextmanager
def probe_run(telemetry: Telemetry, *, probe_id: str, kb_id: str, tenant_id: str) -> Iterator[Span]:
    """The root span ``probe`` of one probe run, current around it: each run is a trace of its own."""
    attributes = {"rag.probe.id": probe_id, "rag.kb.id": kb_id, "rag.tenant.id": tenant_id}
    with telemetry.tracer.start_as_current_span("probe", context=Context(), attributes=attributes) as span:
        yield span
