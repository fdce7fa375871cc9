"""Answer quality as telemetry: counters and histograms of every answer, golden-question probes, and the
OpenTelemetry GenAI ``gen_ai.evaluation.result`` event.

The event follows the GenAI semantic conventions (``gen_ai.evaluation.result``, development stability, from
semantic conventions v1.38.0 on; docs/metrics.md says which fields ragwatch sets): it is emitted through the
Logs API, not as a span event, in the context of the span it evaluates (so it carries that span's trace and
span id), with ``gen_ai.evaluation.name``, ``gen_ai.evaluation.score.value``, ``gen_ai.evaluation.score.label``
where a verdict applies and ``gen_ai.response.id`` when known.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry import trace
from opentelemetry._logs import Logger
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Histogram, Meter, Observation
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from telemetry.instruments import TenantLabels

__all__ = ["EVALUATION_EVENT", "ProbeStatus", "QualityInstruments", "emit_evaluation", "span_context_of"]

EVALUATION_EVENT = "gen_ai.evaluation.result"
SCORE_BUCKETS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


class ProbeStatus:
    """Whether each probe passed its last run in this process: ``rag_probe_success`` (1 or 0)."""

    def __init__(self) -> None:
        self._results: dict[tuple[str, str], int] = {}

    def set(self, kb_id: str, probe_id: str, passed: bool) -> None:
        self._results[(kb_id, probe_id)] = int(passed)

    def keep_only(self, probes: Iterable[tuple[str, str]]) -> None:
        """Forget the probes not in ``probes`` (deleted, or run by another replica now)."""
        wanted = set(probes)
        for key in list(self._results):
            if key not in wanted:
                self._results.pop(key, None)

    def observe(self, _: CallbackOptions) -> Iterable[Observation]:
        for (kb_id, probe_id), passed in list(self._results.items()):
            yield Observation(passed, {"kb_id": kb_id, "probe": probe_id})


class QualityInstruments:
    def __init__(self, meter: Meter, tenant_label: TenantLabels, kb_label_limit: int) -> None:
        self.tenant_label = tenant_label
        self._kb_label = TenantLabels(kb_label_limit)  # the same bound, applied to knowledge-base ids
        self.answers = meter.create_counter(
            "rag.answers", unit="{answer}", description="Chat answers served, by outcome (answered, no_answer, error)"
        )
        self.top_score = self._score(meter, "rag.retrieval.top_score", "Best fused retrieval score of each answer")
        self.groundedness = self._score(
            meter, "rag.answer.groundedness", "Share of an answer's content words found in its cited passages"
        )
        self.citation_coverage = self._score(
            meter, "rag.answer.citation_coverage", "Share of an answer's sentences that carry a citation"
        )
        self.feedback = meter.create_counter(
            "rag.answer.feedback", unit="{feedback}", description="User feedback on answers, by rating"
        )
        self.probes = ProbeStatus()
        meter.create_observable_gauge(
            "rag.probe.success",
            callbacks=[self.probes.observe],
            description="1 when the golden-question probe passed its last run, else 0",
        )
        self.probe_runs = meter.create_counter(
            "rag.probe.runs", unit="{run}", description="Golden-question probe runs by result (pass, fail, error)"
        )
        for result in ("pass", "fail", "error"):
            self.probe_runs.add(0, {"result": result})
        self.probe_duration = meter.create_histogram(
            "rag.probe.duration",
            unit="s",
            description="Time of one golden-question probe run",
            explicit_bucket_boundaries_advisory=[0.01, 0.04, 0.16, 0.64, 2.56, 10.24, 40.96],
        )

    @staticmethod
    def _score(meter: Meter, name: str, description: str) -> Histogram:
        return meter.create_histogram(
            name, unit="{score}", description=description, explicit_bucket_boundaries_advisory=SCORE_BUCKETS
        )

    def labels(self, tenant_id: str, kb_id: str) -> dict[str, str]:
        """The bounded ``tenant`` and ``kb`` labels: a knowledge base has its own only while its tenant does."""
        tenant = self.tenant_label(tenant_id)
        return {"tenant": tenant, "kb": self._kb_label(kb_id) if tenant != "other" else "other"}


def span_context_of(trace_id: str, span_id: str) -> Context:
    """A context whose current span is the (remote, ended) span ``trace_id``/``span_id``: log records emitted in
    it carry that span's ids."""
    context = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(1))
    return trace.set_span_in_context(NonRecordingSpan(context))


def emit_evaluation(
    events: Logger,
    context: Context | None,
    name: str,
    *,
    value: float | None = None,
    label: str | None = None,
    response_id: str | None = None,
    attributes: dict[str, str] | None = None,
) -> None:
    """One ``gen_ai.evaluation.result`` event in ``context`` (the evaluated span's; ``None``: the current one)."""
    fields: dict[str, str | float] = {"gen_ai.evaluation.name": name, **(attributes or {})}
    if value is not None:
        fields["gen_ai.evaluation.score.value"] = value
    if label is not None:
        fields["gen_ai.evaluation.score.label"] = label
    if response_id is not None:
        fields["gen_ai.response.id"] = response_id
    events.emit(event_name=EVALUATION_EVENT, context=context, attributes=fields)
