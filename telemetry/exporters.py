"""Exporter wrappers that count what could not be exported, so a dead collector shows up in ``/metrics``, and a
log processor that keeps the exporters' own complaints out of the OTLP log pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.metrics import Counter
from opentelemetry.sdk._logs import LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = [
    "CountingLogExporter",
    "CountingMetricExporter",
    "CountingSpanExporter",
    "FailureCounter",
    "WithoutTelemetryDiagnostics",
]


class FailureCounter:
    """Adds failed items to ``rag.telemetry.export_failures``; set once the meter exists."""

    def __init__(self) -> None:
        self.counter: Counter | None = None

    def add(self, items: int, signal: str) -> None:
        if self.counter is not None and items:
            self.counter.add(items, {"signal": signal})


class CountingSpanExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, failures: FailureCounter) -> None:
        self._inner = inner
        self._failures = failures

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except Exception:  # an exporter must never raise into the SDK's worker
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self._failures.add(len(spans), "traces")
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class CountingLogExporter(LogRecordExporter):
    def __init__(self, inner: LogRecordExporter, failures: FailureCounter) -> None:
        self._inner = inner
        self._failures = failures

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        try:
            result = self._inner.export(batch)
        except Exception:  # an exporter must never raise into the SDK's worker
            result = LogRecordExportResult.FAILURE
        if result is not LogRecordExportResult.SUCCESS:
            self._failures.add(len(batch), "logs")
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class CountingMetricExporter(MetricExporter):
    def __init__(self, inner: MetricExporter, failures: FailureCounter) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self._inner = inner
        self._failures = failures

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        try:
            result = self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception:  # an exporter must never raise into the SDK's worker
            result = MetricExportResult.FAILURE
        if result is not MetricExportResult.SUCCESS:
            points = sum(
                len(metric.data.data_points)
                for resource in metrics_data.resource_metrics
                for scope in resource.scope_metrics
                for metric in scope.metrics
            )
            self._failures.add(points, "metrics")
        return result

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)


class WithoutTelemetryDiagnostics(LogRecordProcessor):
    """Passes on every log record but those of OpenTelemetry's own loggers (``opentelemetry.*``).

    When the collector is down, each failed export logs a warning; sent over OTLP, that warning is one more
    record to export, which fails and logs again: the log pipeline would never drain, and a shutdown would
    spend its whole deadline on it. These records still reach stdout, where an operator sees them.
    """

    def __init__(self, inner: LogRecordProcessor) -> None:
        self._inner = inner

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        scope = log_record.instrumentation_scope
        if scope is not None and (scope.name == "opentelemetry" or scope.name.startswith("opentelemetry.")):
            return
        self._inner.on_emit(log_record)

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)
