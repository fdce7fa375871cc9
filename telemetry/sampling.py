"""Trace sampling in the process: keep every trace an operator needs, and a share of the rest, deciding before
any span is encoded or exported.

Head sampling decides when a request starts, before it is known to fail or to be slow. This processor lets
every span be recorded (metrics and their exemplars see 100 % of requests) and holds a trace's finished
spans until its local root span ends; then the whole trace is handed to the exporting processor, or dropped:

- kept: any span in error (``error``); the root slower than ``slow_s`` (``slow``); a root whose caller's
  context arrived sampled (``parent``); a golden-question probe run (``probe``);
- of the rest, ``share`` is kept (``share``), chosen by the trace id, so that every replica and the
  collector's tail sampling agree on the same traces; the others are ``dropped``.

It mirrors the collector's tail-sampling policy (``otel-collector.yaml``), which stays for decisions across
replicas; ``RAGWATCH_TRACE_SAMPLE_SHARE=1`` keeps every trace. What is kept and dropped, by reason, is
counted in ``rag.traces.sampled``.

Log records follow their trace (:meth:`TraceSampler.following_logs`): an INFO or DEBUG record written inside
a trace this process records (the access log's, above all) is exported with that trace or not at all, so the
records that leave the process are those that lead somewhere, and the rest cost no encoding. Warnings and
errors, records outside any trace, records about another trace (user feedback on an earlier answer) and audit
records (event :data:`AUDIT_EVENT`: an audit trail with gaps is none) are always exported.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context
from opentelemetry.metrics import Counter
from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.sdk.metrics import ExemplarFilter
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode, get_current_span
from opentelemetry.util.types import Attributes

__all__ = ["AUDIT_EVENT", "KeptTraceExemplars", "TraceSampler", "in_share"]

AUDIT_EVENT = "ragwatch.audit"
"""The event name of the audit trail's records (``service/audit.py``), exported whatever their trace becomes."""

MAX_PENDING_TRACES = 10_000
"""Traces whose root has not ended yet; past it the oldest is decided at once (on what it holds)."""
REMEMBERED_DECISIONS = 10_000
"""Decisions kept for spans that end after their root (work the request left running)."""
_ID_SPACE = 1 << 64


class TraceSampler(SpanProcessor):
    def __init__(self, exporting: SpanProcessor, counter: Counter, *, share: float, slow_s: float) -> None:
        self._exporting = exporting
        self._counter = counter
        self._share = share
        self._slow_ns = int(slow_s * 1e9)
        self._pending: OrderedDict[int, list[ReadableSpan]] = OrderedDict()
        self._pending_logs: OrderedDict[int, list[ReadWriteLogRecord]] = OrderedDict()
        self._logs: LogRecordProcessor | None = None
        self._decided: OrderedDict[int, bool] = OrderedDict()
        self._lock = threading.Lock()
        for decision, reasons in (("kept", ("error", "slow", "parent", "probe", "share")), ("dropped", ("share",))):
            for reason in reasons:
                counter.add(0, {"decision": decision, "reason": reason})

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._exporting.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        trace_id = span.context.trace_id
        with self._lock:
            decided = self._decided.get(trace_id)
            if decided is None and not _is_local_root(span):
                self._hold(trace_id, span)
                return
            records: list[ReadWriteLogRecord] = []
            if decided is None:
                spans = [*self._pending.pop(trace_id, []), span]
                records = self._pending_logs.pop(trace_id, [])
                decided = self._decide(span, spans)
                self._remember(trace_id, decided)
            else:
                spans = [span]
        if decided:
            for held in spans:
                self._exporting.on_end(held)
            self._release(records)

    def following_logs(self, exporting: LogRecordProcessor) -> LogRecordProcessor:
        """A log record processor in front of ``exporting`` that holds each INFO or DEBUG record of a recorded
        trace until the trace is decided, then passes it on only if the trace is kept."""
        self._logs = exporting
        return _FollowingTheTrace(self, exporting)

    def on_log(self, record: ReadWriteLogRecord) -> None:
        trace_id = record.log_record.trace_id
        if not trace_id or _at_least_a_warning(record) or _audit(record) or not _written_inside(trace_id):
            self._release([record])
            return
        overflow: list[ReadWriteLogRecord] = []
        with self._lock:
            decided = self._decided.get(trace_id)
            if decided is None:
                self._pending_logs.setdefault(trace_id, []).append(record)
                if len(self._pending_logs) > MAX_PENDING_TRACES:
                    overflow = self._pending_logs.popitem(last=False)[1]
        if decided is None:
            self._release(overflow)  # a trace that never ends: its records leave undecided rather than never
        elif decided:
            self._release([record])

    def _release(self, records: list[ReadWriteLogRecord]) -> None:
        if self._logs is not None:
            for record in records:
                self._logs.on_emit(record)

    def release_pending_logs(self) -> None:
        """Pass on every record still held: at shutdown their traces will never end, so they leave undecided."""
        with self._lock:
            held = [record for records in self._pending_logs.values() for record in records]
            self._pending_logs.clear()
        self._release(held)

    def _hold(self, trace_id: int, span: ReadableSpan) -> None:
        self._pending.setdefault(trace_id, []).append(span)
        if len(self._pending) > MAX_PENDING_TRACES:  # a root that never ends must not hold memory forever
            oldest, spans = self._pending.popitem(last=False)
            self._remember(oldest, kept := self._decide(spans[-1], spans))
            records = self._pending_logs.pop(oldest, [])
            if kept:
                for held in spans:
                    self._exporting.on_end(held)
                self._release(records)

    def _remember(self, trace_id: int, kept: bool) -> None:
        self._decided[trace_id] = kept
        if len(self._decided) > REMEMBERED_DECISIONS:
            self._decided.popitem(last=False)

    def _decide(self, root: ReadableSpan, spans: list[ReadableSpan]) -> bool:
        reason = self._reason(root, spans)
        kept = reason is not None
        self._counter.add(1, {"decision": "kept" if kept else "dropped", "reason": reason or "share"})
        return kept

    def _reason(self, root: ReadableSpan, spans: list[ReadableSpan]) -> str | None:
        if any(span.status.status_code is StatusCode.ERROR for span in spans):
            return "error"
        if (root.end_time or 0) - (root.start_time or 0) >= self._slow_ns:
            return "slow"
        parent = root.parent
        if parent is not None and parent.is_remote and parent.trace_flags.sampled:
            return "parent"
        if root.attributes and "rag.probe.id" in root.attributes:
            return "probe"
        if in_share(root.context.trace_id, self._share):
            return "share"
        return None

    def shutdown(self) -> None:
        self._exporting.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._exporting.force_flush(timeout_millis)


class _FollowingTheTrace(LogRecordProcessor):
    def __init__(self, sampler: TraceSampler, exporting: LogRecordProcessor) -> None:
        self._sampler = sampler
        self._exporting = exporting

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        self._sampler.on_log(log_record)

    def shutdown(self) -> None:
        self._sampler.release_pending_logs()
        self._exporting.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._exporting.force_flush(timeout_millis)


def in_share(trace_id: int, share: float) -> bool:
    """Whether a trace is among the ``share`` kept of ordinary traces. The low 64 bits of a W3C trace id are
    random, so the same traces are chosen wherever this is decided: in every replica, and at record time."""
    return (trace_id & (_ID_SPACE - 1)) < int(share * _ID_SPACE)


class KeptTraceExemplars(ExemplarFilter):
    """Exemplars only of requests whose trace is exported, so that every dot on a latency panel opens a trace:
    those in the share, and failed ones (a 5xx status among the point's attributes). A slow request's trace is
    kept too, but is not known to be slow when its value is recorded: dashboards reach those by duration."""

    def __init__(self, share: float) -> None:
        self._share = share

    def should_sample(self, value: float, time_unix_nano: int, attributes: Attributes, context: Context) -> bool:
        span_context = get_current_span(context).get_span_context()
        if not span_context.is_valid or not span_context.trace_flags.sampled:
            return False
        if in_share(span_context.trace_id, self._share):
            return True
        status = (attributes or {}).get("http.response.status_code", (attributes or {}).get("status"))
        return str(status).startswith("5")


def _written_inside(trace_id: int) -> bool:
    """Whether the record is being written inside its own trace (the records processors see are emitted
    synchronously, in the writer's context). A record about another trace (the feedback event on the rated
    answer's, long decided) is not that trace's to keep or drop. The current span may have ended already: the
    access record is written once the server span has ended with the response's last byte, and then follows the
    decision just made."""
    return get_current_span().get_span_context().trace_id == trace_id


def _audit(record: ReadWriteLogRecord) -> bool:
    return record.log_record.event_name == AUDIT_EVENT


def _at_least_a_warning(record: ReadWriteLogRecord) -> bool:
    severity = record.log_record.severity_number
    return severity is not None and severity.value >= SeverityNumber.WARN.value


def _is_local_root(span: ReadableSpan) -> bool:
    return span.parent is None or span.parent.is_remote
