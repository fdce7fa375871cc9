"""The in-process trace sampler (telemetry/sampling.py): whole traces kept or dropped when their local root
ends, every error, slow, caller-sampled and probe trace kept, a consistent share of the rest."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest
from opentelemetry import trace
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from telemetry.sampling import AUDIT_EVENT, KeptTraceExemplars, TraceSampler, in_share


class Pipeline:
    """A tracer whose finished spans pass the sampler into an in-memory exporter, and the sampler's counts."""

    def __init__(self, share: float, slow_s: float = 1.0) -> None:
        self.exported = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        counter = MeterProvider(metric_readers=[self.reader]).get_meter("test").create_counter("rag.traces.sampled")
        sampler = TraceSampler(SimpleSpanProcessor(self.exported), counter, share=share, slow_s=slow_s)
        provider = TracerProvider()
        provider.add_span_processor(sampler)
        self.tracer = provider.get_tracer("test")
        self.logged = InMemoryLogRecordExporter()
        self.log_provider = LoggerProvider()
        self.log_provider.add_log_record_processor(sampler.following_logs(SimpleLogRecordProcessor(self.logged)))
        self.logger = self.log_provider.get_logger("ragwatch.access")

    def request(
        self, *, error: bool = False, sleep_s: float = 0.0, parent: trace.Span | None = None, warn: bool = False
    ) -> int:
        """A server span with one child, like a request, and its access-log record; its trace id."""
        context = trace.set_span_in_context(parent) if parent is not None else None
        with self.tracer.start_as_current_span("POST /v1/chat", context=context) as root:
            with self.tracer.start_as_current_span("rag.retrieve") as child:
                if error:
                    child.set_status(Status(StatusCode.ERROR))
            time.sleep(sleep_s)
            severity = SeverityNumber.WARN if warn else SeverityNumber.INFO
            self.logger.emit(LogRecord(body="POST /v1/chat 200", severity_number=severity))
        return root.get_span_context().trace_id

    def logged_traces(self) -> list[int]:
        return [record.log_record.trace_id or 0 for record in self.logged.get_finished_logs()]

    def traces(self) -> dict[int, Sequence[ReadableSpan]]:
        found: dict[int, list[ReadableSpan]] = {}
        for span in self.exported.get_finished_spans():
            found.setdefault(span.context.trace_id, []).append(span)
        return found

    def counted(self, decision: str, reason: str) -> int:
        data = self.reader.get_metrics_data()
        assert data is not None
        return sum(
            int(point.value)
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            for point in metric.data.data_points  # type: ignore[union-attr]
            if point.attributes == {"decision": decision, "reason": reason}
        )


def test_every_error_trace_is_kept_whole_among_ordinary_ones_dropped() -> None:
    pipeline = Pipeline(share=0.0)
    errors = [pipeline.request(error=True) for _ in range(20)]
    ordinary = [pipeline.request() for _ in range(200)]

    traces = pipeline.traces()

    assert sorted(traces) == sorted(errors)
    assert all(len(spans) == 2 for spans in traces.values())  # the whole trace, not only the failed span
    assert not set(ordinary) & set(traces)
    assert pipeline.counted("kept", "error") == 20
    assert pipeline.counted("dropped", "share") == 200


def test_a_slow_request_is_kept() -> None:
    pipeline = Pipeline(share=0.0, slow_s=0.05)

    slow, fast = pipeline.request(sleep_s=0.06), pipeline.request()

    assert set(pipeline.traces()) == {slow}
    assert pipeline.counted("kept", "slow") == 1
    assert fast not in pipeline.traces()


def test_a_request_whose_caller_sampled_its_trace_is_kept() -> None:
    pipeline = Pipeline(share=0.0)
    sampled = NonRecordingSpan(SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1)))
    unsampled = NonRecordingSpan(SpanContext(0x123, 0x456, is_remote=True, trace_flags=TraceFlags(0)))

    kept, dropped = pipeline.request(parent=sampled), pipeline.request(parent=unsampled)

    assert set(pipeline.traces()) == {kept}
    assert dropped not in pipeline.traces()
    assert pipeline.counted("kept", "parent") == 1


def test_a_probe_run_is_kept() -> None:
    pipeline = Pipeline(share=0.0)
    with pipeline.tracer.start_as_current_span("probe", attributes={"rag.probe.id": "probe_1"}) as root:
        pass

    assert set(pipeline.traces()) == {root.get_span_context().trace_id}
    assert pipeline.counted("kept", "probe") == 1


@pytest.mark.parametrize("share", [0.1, 0.5])
def test_the_share_of_ordinary_traces_kept_is_about_the_setting_and_the_same_for_the_same_trace_ids(
    share: float,
) -> None:
    pipeline = Pipeline(share=share)
    ids = [pipeline.request() for _ in range(2000)]

    kept = set(pipeline.traces())

    assert abs(len(kept) / len(ids) - share) < 0.05
    assert kept == {trace_id for trace_id in ids if (trace_id & ((1 << 64) - 1)) < share * (1 << 64)}


def test_a_share_of_1_keeps_every_trace_and_every_record() -> None:
    pipeline = Pipeline(share=1.0)
    ids = [pipeline.request() for _ in range(50)]

    assert set(pipeline.traces()) == set(ids)
    assert sorted(pipeline.logged_traces()) == sorted(ids)


def test_a_span_ending_after_its_root_follows_the_roots_decision() -> None:
    pipeline = Pipeline(share=0.0)
    with pipeline.tracer.start_as_current_span("POST /v1/chat") as root:
        late = pipeline.tracer.start_span("left running")
        pipeline.tracer.start_span("failed").set_status(Status(StatusCode.ERROR))
    late.end()
    with pipeline.tracer.start_as_current_span("POST /v1/chat") as kept_root:
        kept_late = pipeline.tracer.start_span("left running")
        failed = pipeline.tracer.start_span("failed")
        failed.set_status(Status(StatusCode.ERROR))
        failed.end()
    kept_late.end()

    traces = pipeline.traces()

    assert root.get_span_context().trace_id not in traces
    assert [span.name for span in traces[kept_root.get_span_context().trace_id]] == [
        "failed",
        "POST /v1/chat",
        "left running",
    ]


def _context(trace_id: int, *, sampled: bool = True) -> Context:
    span_context = SpanContext(trace_id, 0x1, is_remote=False, trace_flags=TraceFlags(int(sampled)))
    return trace.set_span_in_context(NonRecordingSpan(span_context))


def test_exemplars_are_kept_only_for_traces_that_will_be_exported() -> None:
    exemplars = KeptTraceExemplars(share=0.1)
    in_the_share, outside = 1, (1 << 64) - 1  # the low 64 bits decide: near 0 is kept, near the top is not

    assert in_share(in_the_share, 0.1)
    assert not in_share(outside, 0.1)
    assert exemplars.should_sample(0.01, 0, {"status": "200"}, _context(in_the_share))
    assert not exemplars.should_sample(0.01, 0, {"status": "200"}, _context(outside))
    assert exemplars.should_sample(0.01, 0, {"status": "502"}, _context(outside))  # a failure's trace is kept
    assert exemplars.should_sample(0.01, 0, {"http.response.status_code": 503}, _context(outside))
    assert not exemplars.should_sample(0.01, 0, {"status": "200"}, _context(in_the_share, sampled=False))
    assert not exemplars.should_sample(0.01, 0, {}, Context())  # no span: nothing to lead to


def test_an_info_record_leaves_with_its_trace_or_not_at_all() -> None:
    pipeline = Pipeline(share=0.0)
    errors = [pipeline.request(error=True) for _ in range(5)]
    ordinary = [pipeline.request() for _ in range(50)]

    assert sorted(pipeline.logged_traces()) == sorted(errors)  # every kept trace's record; none of the others
    assert not set(ordinary) & set(pipeline.logged_traces())


def test_warnings_and_records_outside_any_trace_always_leave() -> None:
    pipeline = Pipeline(share=0.0)
    warned = pipeline.request(warn=True)
    pipeline.logger.emit(LogRecord(body="started", severity_number=SeverityNumber.INFO))

    assert pipeline.logged_traces() == [warned, 0]


def test_records_of_traces_still_open_at_shutdown_leave_undecided() -> None:
    pipeline = Pipeline(share=0.0)
    with pipeline.tracer.start_as_current_span("POST /v1/chat") as root:
        pipeline.logger.emit(LogRecord(body="POST /v1/chat 200", severity_number=SeverityNumber.INFO))
        assert pipeline.logged_traces() == []  # held until the trace is decided
        pipeline.log_provider.shutdown()

    assert pipeline.logged_traces() == [root.get_span_context().trace_id]


def test_a_record_about_an_earlier_trace_leaves_whatever_that_trace_became() -> None:
    """User feedback is emitted in the rated answer's trace context, from another request, long after that
    trace was decided: it is not the answer's trace's to keep or drop."""
    pipeline = Pipeline(share=0.0)
    answered = pipeline.request()  # an ordinary trace: dropped
    with pipeline.tracer.start_as_current_span("POST /v1/feedback") as feedback:
        rated = trace.set_span_in_context(
            NonRecordingSpan(SpanContext(answered, 1, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)))
        )
        pipeline.logger.emit(LogRecord(body="ragwatch.feedback", context=rated, severity_number=SeverityNumber.INFO))

    assert pipeline.logged_traces() == [answered]
    assert feedback.get_span_context().trace_id not in pipeline.traces()  # the feedback request itself: dropped


def test_an_audit_record_leaves_even_when_its_trace_is_dropped() -> None:
    """An audit trail with gaps is none: a ``ragwatch.audit`` event is not its trace's to keep or drop."""
    pipeline = Pipeline(share=0.0)
    with pipeline.tracer.start_as_current_span("DELETE /v1/knowledge-bases/{kb_id}") as root:
        pipeline.logger.emit(
            LogRecord(body="knowledge_base.delete success", severity_number=SeverityNumber.INFO, event_name=AUDIT_EVENT)
        )
        pipeline.logger.emit(LogRecord(body="DELETE /v1/knowledge-bases 204", severity_number=SeverityNumber.INFO))

    assert pipeline.logged_traces() == [root.get_span_context().trace_id]  # the audit record, not the access one
    assert root.get_span_context().trace_id not in pipeline.traces()
