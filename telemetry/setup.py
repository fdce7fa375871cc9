"""Providers, exporters and readers, built from the standard ``OTEL_*`` variables.

- ``OTEL_SDK_DISABLED=true``: no-op providers; the service works the same, untraced, and ``/metrics`` is empty.
- No ``OTEL_EXPORTER_OTLP_ENDPOINT`` (nor a per-signal one): nothing leaves the process; metrics are still
  served at ``/metrics``.
- Otherwise each signal with an endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``, or its own
  ``OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_ENDPOINT``) goes over OTLP (``OTEL_EXPORTER_OTLP_PROTOCOL`` or
  its per-signal variant: ``grpc`` or ``http/protobuf``). The endpoints, protocols and export timeouts are read
  from the ``environ`` given to :func:`setup_telemetry`; headers, compression and certificates are read by the
  exporters themselves from the process environment.

Telemetry never becomes the service's failure: span and log queues are bounded (``OTEL_BSP_MAX_QUEUE_SIZE``,
``OTEL_BLRP_MAX_QUEUE_SIZE``, 2048 by default; items beyond them are dropped, oldest first), each export gives
up after ``OTEL_EXPORTER_OTLP_TIMEOUT`` seconds (5 by default) counting what it could not deliver in
``rag.telemetry.export_failures``, and :meth:`Telemetry.shutdown` returns within its deadline whatever the
collector does.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry import metrics, trace
from opentelemetry._logs import Logger, NoOpLoggerProvider
from opentelemetry._logs import LoggerProvider as ApiLoggerProvider
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

from telemetry.exporters import (
    CountingLogExporter,
    CountingMetricExporter,
    CountingSpanExporter,
    FailureCounter,
    WithoutTelemetryDiagnostics,
)
from telemetry.instruments import Instruments
from telemetry.quality import QualityInstruments
from telemetry.sampling import KeptTraceExemplars, TraceSampler

__all__ = ["Telemetry", "TelemetryOptions", "disabled_telemetry", "setup_telemetry", "use_stable_semantic_conventions"]

logger = logging.getLogger("ragwatch.telemetry")
SCOPE = "ragwatch"
SIGNALS = ("traces", "metrics", "logs")
DEFAULT_EXPORT_TIMEOUT_S = 5.0
"""Seconds an OTLP export may take, retries included, unless ``OTEL_EXPORTER_OTLP_TIMEOUT`` says otherwise."""


@dataclass(frozen=True)
class TelemetryOptions:
    service_version: str
    metrics_enabled: bool = True
    capture_content: bool = False
    tenant_label_limit: int = 100
    kb_label_limit: int = 200
    trace_sample_share: float = 1.0
    """Share of ordinary traces exported over OTLP (:mod:`telemetry.sampling`); the service passes its setting."""
    trace_slow_s: float = 2.0
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
    quality: QualityInstruments
    registry: CollectorRegistry | None
    capture_content: bool
    shutdown_timeout_s: float
    otlp_signals: frozenset[str] = frozenset()
    """The signals exported over OTLP (``traces``, ``metrics``, ``logs``); empty when nothing leaves the process."""
    tracer: trace.Tracer = field(init=False)
    events: Logger = field(init=False)
    """Where OpenTelemetry events (``gen_ai.evaluation.result``, ``ragwatch.feedback``) are emitted."""
    _shutdown_started: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.tracer = self.tracer_provider.get_tracer(SCOPE)
        self.events = self.logger_provider.get_logger(SCOPE)

    def shutdown(self) -> None:
        """Flush and stop every provider; returns within ``shutdown_timeout_s`` whatever the collector does.

        The providers flush concurrently, each in a daemon thread: a collector that hangs or refuses keeps
        its exporter busy until the deadline, after which what is left is abandoned rather than waited for
        (the SDK's own flush does not honour a timeout). Calling it again does nothing.
        """
        if self._shutdown_started:
            return
        self._shutdown_started = True
        timeout_ms = int(self.shutdown_timeout_s * 1000)
        steps: list[tuple[str, Callable[[], object]]] = []
        if isinstance(self.tracer_provider, TracerProvider):
            steps.append(("traces", self.tracer_provider.shutdown))
        if isinstance(self.logger_provider, LoggerProvider):
            steps.append(("logs", self.logger_provider.shutdown))
        if isinstance(self.meter_provider, MeterProvider):
            meter_provider = self.meter_provider
            steps.append(("metrics", lambda: meter_provider.shutdown(timeout_millis=timeout_ms)))
        threads = [
            threading.Thread(target=_quietly(step), name=f"ragwatch-shutdown-{name}", daemon=True)
            for name, step in steps
        ]
        deadline = time.monotonic() + self.shutdown_timeout_s
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0))
        unfinished = [thread.name for thread in threads if thread.is_alive()]
        if unfinished:
            logger.warning(
                "telemetry shutdown: gave up flushing after %.1fs (%s)", self.shutdown_timeout_s, ", ".join(unfinished)
            )


def _quietly(step: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        try:
            step()
        except Exception:  # a failing flush must not turn the service's exit into a crash
            logger.exception("telemetry shutdown failed")

    return run


def disabled_telemetry(options: TelemetryOptions | None = None) -> Telemetry:
    """No-op providers: nothing is recorded or exported (``OTEL_SDK_DISABLED=true``, or no telemetry wanted)."""
    options = options or TelemetryOptions(service_version="0")
    no_meters = metrics.NoOpMeterProvider()
    instruments = Instruments(no_meters.get_meter(SCOPE), options.tenant_label_limit)
    return Telemetry(
        enabled=False,
        tracer_provider=trace.NoOpTracerProvider(),
        meter_provider=no_meters,
        logger_provider=NoOpLoggerProvider(),
        instruments=instruments,
        quality=QualityInstruments(no_meters.get_meter(SCOPE), instruments.tenant_label, options.kb_label_limit),
        registry=None,
        capture_content=options.capture_content,
        shutdown_timeout_s=options.shutdown_timeout_s,
    )


def use_stable_semantic_conventions() -> None:
    """Ask the instrumentations for the stable HTTP semantic conventions (``http.server.request.duration``…).

    They read ``OTEL_SEMCONV_STABILITY_OPT_IN`` once per process, when the first instrumentation of any kind
    (HTTP server, HTTP client, Redis) is created, so every place that creates one calls this first: otherwise
    whichever came first would fix the old names (``http.server.duration``, in milliseconds) for all.
    """
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")


def setup_telemetry(options: TelemetryOptions, environ: Mapping[str, str] = os.environ) -> Telemetry:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return disabled_telemetry(options)
    use_stable_semantic_conventions()
    # The SDK counts the spans and log records its batch processors drop (queue full) only when asked;
    # it reads the variable as each processor is built.
    os.environ.setdefault("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    resource = _resource(options.service_version)
    failures = FailureCounter()
    otlp = _otlp_exporters(environ, failures)

    readers: list[MetricReader] = list(options.extra_metric_readers)
    registry = CollectorRegistry() if options.metrics_enabled else None
    if registry is not None:
        readers.append(PrometheusMetricReader(registry=registry))
    if otlp.metrics is not None:
        # The interval comes from OTEL_METRIC_EXPORT_INTERVAL (default 60 s).
        readers.append(PeriodicExportingMetricReader(otlp.metrics, export_timeout_millis=otlp.timeout_s * 1000))
    # Exemplars only of traces that will be exported (telemetry.sampling), so each one leads to a trace.
    exemplars = KeptTraceExemplars(options.trace_sample_share if otlp.spans is not None else 1.0)
    meter_provider = MeterProvider(resource=resource, metric_readers=readers, exemplar_filter=exemplars)
    instruments = Instruments(meter_provider.get_meter(SCOPE), options.tenant_label_limit)
    failures.counter = instruments.export_failures
    for signal in SIGNALS:  # a series per signal from the first scrape: 0 until an export fails
        instruments.export_failures.add(0, {"signal": signal})

    # The sampler comes from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (default: parentbased_always_on);
    # the batch processors' delays, batch and queue sizes from OTEL_BSP_* and OTEL_BLRP_*.
    tracer_provider = TracerProvider(resource=resource)
    for processor in options.extra_span_processors:
        tracer_provider.add_span_processor(processor)
    if otlp.spans is not None:
        # With the meter provider, the SDK counts what it drops (queue full) in otel.sdk.processor.span.processed.
        exporting = BatchSpanProcessor(otlp.spans, meter_provider=meter_provider)
        sampled = instruments.traces_sampled
        share, slow_s = options.trace_sample_share, options.trace_slow_s
        tracer_provider.add_span_processor(TraceSampler(exporting, sampled, share=share, slow_s=slow_s))

    logger_provider = LoggerProvider(resource=resource)
    for exporter in options.extra_log_exporters:
        logger_provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    if otlp.logs is not None:
        logger_provider.add_log_record_processor(
            WithoutTelemetryDiagnostics(BatchLogRecordProcessor(otlp.logs, meter_provider=meter_provider))
        )
    return Telemetry(
        enabled=True,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
        instruments=instruments,
        quality=QualityInstruments(meter_provider.get_meter(SCOPE), instruments.tenant_label, options.kb_label_limit),
        registry=registry,
        capture_content=options.capture_content,
        shutdown_timeout_s=options.shutdown_timeout_s,
        otlp_signals=otlp.signals,
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


def _otlp_exporters(environ: Mapping[str, str], failures: FailureCounter) -> _OtlpExporters:
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
    return _OtlpExporters(spans=spans, metrics=metric_exporter, logs=logs, timeout_s=longest)
