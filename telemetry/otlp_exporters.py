"""The OTLP exporters the standard ``OTEL_EXPORTER_OTLP_*`` variables ask for, each wrapped to count what it
fails to deliver (``rag.telemetry.export_failures``), and the metric export interval."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans
from opentelemetry.sdk._logs.export import LogRecordExporter
from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.trace.export import SpanExporter

from telemetry.exporters import CountingLogExporter, CountingMetricExporter, CountingSpanExporter, FailureCounter

__all__ = ["DEFAULT_EXPORT_TIMEOUT_S", "SIGNALS", "OtlpExporters", "export_interval_s", "otlp_exporters"]

logger = logging.getLogger("ragwatch.telemetry")
SIGNALS = ("traces", "metrics", "logs")
DEFAULT_EXPORT_TIMEOUT_S = 5.0
"""Seconds an OTLP export may take, retries included, unless ``OTEL_EXPORTER_OTLP_TIMEOUT`` says otherwise."""
DEFAULT_METRIC_EXPORT_INTERVAL_MS = 60_000.0


def export_interval_s(environ: Mapping[str, str]) -> float:
    """``OTEL_METRIC_EXPORT_INTERVAL``, in milliseconds as the specification has it; 60 s by default."""
    raw = environ.get("OTEL_METRIC_EXPORT_INTERVAL", "").strip()
    try:
        interval_ms = float(raw) if raw else DEFAULT_METRIC_EXPORT_INTERVAL_MS
    except ValueError:
        logger.warning("OTEL_METRIC_EXPORT_INTERVAL: %r is not milliseconds; using 60000", raw)
        interval_ms = DEFAULT_METRIC_EXPORT_INTERVAL_MS
    return (interval_ms if interval_ms > 0 else DEFAULT_METRIC_EXPORT_INTERVAL_MS) / 1000


@dataclass(frozen=True)
class OtlpExporters:
    spans: SpanExporter | None
    metrics: MetricExporter | None
    logs: LogRecordExporter | None
    timeout_s: float

    @property
    def signals(self) -> frozenset[str]:
        built = {"traces": self.spans, "metrics": self.metrics, "logs": self.logs}
        return frozenset(name for name, exporter in built.items() if exporter is not None)


def _setting(environ: Mapping[str, str], signal: str, name: str) -> str | None:
    """``OTEL_EXPORTER_OTLP_{SIGNAL}_{NAME}``, else ``OTEL_EXPORTER_OTLP_{NAME}``, else ``None``."""
    for variable in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
        value = environ.get(variable, "").strip()
        if value:
            return value
    return None


def _endpoint(environ: Mapping[str, str], signal: str, protocol: str) -> str | None:
    """Where ``signal`` goes: its own endpoint as given, or the shared one (plus ``/v1/{signal}`` over HTTP)."""
    own = environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT", "").strip()
    if own:
        return own
    shared = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if not shared:
        return None
    return shared if protocol == "grpc" else f"{shared.removesuffix('/')}/v1/{signal}"


def _timeout_s(environ: Mapping[str, str], signal: str) -> float:
    """Seconds, as the Python exporters read ``OTEL_EXPORTER_OTLP_TIMEOUT`` (the default is shorter than theirs)."""
    raw = _setting(environ, signal, "TIMEOUT")
    try:
        timeout = float(raw) if raw is not None else DEFAULT_EXPORT_TIMEOUT_S
    except ValueError:
        logger.warning("OTEL_EXPORTER_OTLP_TIMEOUT: %r is not seconds; using %s", raw, DEFAULT_EXPORT_TIMEOUT_S)
        return DEFAULT_EXPORT_TIMEOUT_S
    return timeout if timeout > 0 else DEFAULT_EXPORT_TIMEOUT_S


def _protocol(environ: Mapping[str, str], signal: str) -> str:
    protocol = (_setting(environ, signal, "PROTOCOL") or "http/protobuf").lower()
    if protocol not in ("grpc", "http/protobuf"):
        logger.warning("OTEL_EXPORTER_OTLP_PROTOCOL: %r is not supported; using http/protobuf", protocol)
        return "http/protobuf"
    return protocol


def otlp_exporters(environ: Mapping[str, str], failures: FailureCounter) -> OtlpExporters:
    """An exporter for each signal that has an endpoint, wrapped to count what it fails to deliver."""
    built: dict[str, tuple[str, float]] = {}
    grpc: dict[str, bool] = {}
    for signal in SIGNALS:
        protocol = _protocol(environ, signal)
        endpoint = _endpoint(environ, signal, protocol)
        if endpoint is not None:
            built[signal] = (endpoint, _timeout_s(environ, signal))
            grpc[signal] = protocol == "grpc"
    spans: SpanExporter | None = None
    metric_exporter: MetricExporter | None = None
    logs: LogRecordExporter | None = None
    if "traces" in built:
        endpoint, timeout = built["traces"]
        inner_spans = (GrpcSpans if grpc["traces"] else HttpSpans)(endpoint=endpoint, timeout=timeout)
        spans = CountingSpanExporter(inner_spans, failures)
    if "metrics" in built:
        endpoint, timeout = built["metrics"]
        inner_metrics = (GrpcMetrics if grpc["metrics"] else HttpMetrics)(endpoint=endpoint, timeout=timeout)
        metric_exporter = CountingMetricExporter(inner_metrics, failures)
    if "logs" in built:
        endpoint, timeout = built["logs"]
        inner_logs = (GrpcLogs if grpc["logs"] else HttpLogs)(endpoint=endpoint, timeout=timeout)
        logs = CountingLogExporter(inner_logs, failures)
    longest = max((timeout for _, timeout in built.values()), default=DEFAULT_EXPORT_TIMEOUT_S)
    return OtlpExporters(spans=spans, metrics=metric_exporter, logs=logs, timeout_s=longest)
