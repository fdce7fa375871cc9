"""Providers, exporters and readers, built from the standard ``OTEL_*`` variables.

- ``OTEL_SDK_DISABLED=true``: no-op providers; the service works the same, untraced, and ``/metrics`` is empty.
- No ``OTEL_EXPORTER_OTLP_ENDPOINT`` (nor a per-signal one): nothing leaves the process; metrics are still
  served at ``/metrics``.
- Otherwise traces, metrics and logs go over OTLP (``OTEL_EXPORTER_OTLP_PROTOCOL``: ``grpc`` or
  ``http/protobuf``), with ``OTEL_EXPORTER_OTLP_HEADERS``; the exporters read those variables themselves.

Telemetry never becomes the service's failure: span and log queues are bounded (items beyond them are dropped
and counted), exports time out quickly, and shutdown flushes within a deadline.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry import metrics, trace
from opentelemetry._logs import LoggerProvider as ApiLoggerProvider
from opentelemetry._logs import NoOpLoggerProvider
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from prometheus_client import CollectorRegistry

from telemetry.exporters import CountingLogExporter, CountingMetricExporter, CountingSpanExporter, FailureCounter
from telemetry.instruments import Instruments

__all__ = ["Telemetry", "TelemetryOptions", "disabled_telemetry", "setup_telemetry"]

logger = logging.getLogger("ragwatch.telemetry")
SCOPE = "ragwatch"
_QUEUE_SIZE = 4096
_EXPORT_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class TelemetryOptions:
    service_version: str
    metrics_enabled: bool = True
    capture_content: bool = False
    tenant_label_limit: int = 100
    shutdown_timeout_s: float = 5.0
    extra_span_processors: Sequence[SpanProcessor] = ()
    """Test hooks: in-memory exporters are added here, beside what the environment configures."""
    extra_metric_readers: Sequence[MetricReader] = ()
    extra_log_exporters: Sequence[LogRecordExporter] = ()


@dataclass
class Telemetry:
    """What ``service/`` receives: providers, instruments and the Prometheus registry behind ``/metrics``."""

    enabled: bool
    tracer_provider: trace.TracerProvider
    meter_provider: metrics.MeterProvider
    logger_provider: ApiLoggerProvider
    instruments: Instruments
    registry: CollectorRegistry | None
    capture_content: bool
    shutdown_timeout_s: float
    tracer: trace.Tracer = field(init=False)

    def __post_init__(self) -> None:
        self.tracer = self.tracer_provider.get_tracer(SCOPE)

    def __deepcopy__(self, memo: dict[int, object]) -> Telemetry:
        """One per process: Litestar deep-copies middleware arguments per route, which must share it."""
        return self

    def shutdown(self) -> None:
        """Flush and stop every provider, each within the shutdown deadline."""
        timeout_ms = int(self.shutdown_timeout_s * 1000)
        if isinstance(self.tracer_provider, TracerProvider):
            self.tracer_provider.force_flush(timeout_ms)
            self.tracer_provider.shutdown()
        if isinstance(self.logger_provider, LoggerProvider):
            self.logger_provider.force_flush(timeout_ms)
            self.logger_provider.shutdown()
        if isinstance(self.meter_provider, MeterProvider):
            self.meter_provider.shutdown(timeout_millis=timeout_ms)


def disabled_telemetry(options: TelemetryOptions | None = None) -> Telemetry:
    """No-op providers: nothing is recorded or exported (``OTEL_SDK_DISABLED=true``, or no telemetry wanted)."""
    options = options or TelemetryOptions(service_version="0")
    no_meters = metrics.NoOpMeterProvider()
    return Telemetry(
        enabled=False,
        tracer_provider=trace.NoOpTracerProvider(),
        meter_provider=no_meters,
        logger_provider=NoOpLoggerProvider(),
        instruments=Instruments(no_meters.get_meter(SCOPE), options.tenant_label_limit),
        registry=None,
        capture_content=options.capture_content,
        shutdown_timeout_s=options.shutdown_timeout_s,
    )


def setup_telemetry(options: TelemetryOptions, environ: Mapping[str, str] = os.environ) -> Telemetry:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return disabled_telemetry(options)
    resource = _resource(options.service_version)
    failures = FailureCounter()
    otlp = _otlp_exporters(environ, failures)

    readers: list[MetricReader] = list(options.extra_metric_readers)
    registry = CollectorRegistry() if options.metrics_enabled else None
    if registry is not None:
        readers.append(PrometheusMetricReader(registry=registry))
    if otlp is not None:
        readers.append(PeriodicExportingMetricReader(otlp.metrics, export_timeout_millis=_EXPORT_TIMEOUT_MS))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    instruments = Instruments(meter_provider.get_meter(SCOPE), options.tenant_label_limit)
    failures.counter = instruments.export_failures

    # The sampler comes from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (default: parentbased_always_on).
    tracer_provider = TracerProvider(resource=resource)
    for processor in options.extra_span_processors:
        tracer_provider.add_span_processor(processor)
    if otlp is not None:
        tracer_provider.add_span_processor(
            BatchSpanProcessor(otlp.spans, max_queue_size=_QUEUE_SIZE, export_timeout_millis=_EXPORT_TIMEOUT_MS)
        )

    logger_provider = LoggerProvider(resource=resource)
    log_exporters = list(options.extra_log_exporters) + ([otlp.logs] if otlp is not None else [])
    for exporter in log_exporters:
        logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(exporter, max_queue_size=_QUEUE_SIZE, export_timeout_millis=_EXPORT_TIMEOUT_MS)
        )
    return Telemetry(
        enabled=True,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
        instruments=instruments,
        registry=registry,
        capture_content=options.capture_content,
        shutdown_timeout_s=options.shutdown_timeout_s,
    )


def _resource(service_version: str) -> Resource:
    """Defaults, overridden by ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``."""
    defaults = Resource(
        {
            "service.name": "ragwatch",
            "service.version": service_version,
            "service.instance.id": str(uuid.uuid4()),
            "deployment.environment.name": "development",
        }
    )
    return defaults.merge(OTELResourceDetector().detect())


@dataclass(frozen=True)
class _OtlpExporters:
    spans: SpanExporter
    metrics: MetricExporter
    logs: LogRecordExporter


def _otlp_exporters(environ: Mapping[str, str], failures: FailureCounter) -> _OtlpExporters | None:
    configured = any(
        environ.get(name)
        for name in (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
        )
    )
    if not configured:
        return None
    protocol = environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf").strip()
    if protocol == "grpc":
        spans: SpanExporter = GrpcSpans()
        metric_exporter: MetricExporter = GrpcMetrics()
        logs: LogRecordExporter = GrpcLogs()
    else:
        spans, metric_exporter, logs = HttpSpans(), HttpMetrics(), HttpLogs()
    return _OtlpExporters(
        spans=CountingSpanExporter(spans, failures),
        metrics=CountingMetricExporter(metric_exporter, failures),
        logs=CountingLogExporter(logs, failures),
    )
