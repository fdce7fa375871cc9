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
collector does. Nor its latency: metrics are aggregated once for ``/metrics`` and OTLP
(:mod:`telemetry.metric_reader`), traces and their informational log records are sampled before they are
encoded (:mod:`telemetry.sampling`), exports go in small batches, and the GIL changes hands sooner
(:func:`_hand_the_gil_over_sooner`).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry import metrics, trace
from opentelemetry._logs import Logger, NoOpLoggerProvider
from opentelemetry._logs import LoggerProvider as ApiLoggerProvider
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CollectorRegistry

from telemetry.exporters import FailureCounter, WithoutTelemetryDiagnostics
from telemetry.instruments import Instruments
from telemetry.metric_reader import ScrapedAndPushedReader, exports_cumulative
from telemetry.otlp_exporters import SIGNALS, OtlpExporters, export_interval_s, otlp_exporters
from telemetry.quality import QualityInstruments
from telemetry.sampling import KeptTraceExemplars, TraceSampler

__all__ = ["Telemetry", "TelemetryOptions", "disabled_telemetry", "setup_telemetry", "use_stable_semantic_conventions"]

logger = logging.getLogger("ragwatch.telemetry")
SCOPE = "ragwatch"
EXPORT_BATCH_SIZE = 64
"""Spans or log records per OTLP export (the SDK's default is 512): short encodings rather than long bursts."""
DEFAULT_SWITCH_INTERVAL_S = 0.005
EXPORT_SWITCH_INTERVAL_S = 0.0005


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
    otlp = otlp_exporters(environ, failures)
    if otlp.signals:
        _hand_the_gil_over_sooner()

    registry = CollectorRegistry() if options.metrics_enabled else None
    readers = [*options.extra_metric_readers, *_metric_readers(registry, otlp, environ)]
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
    sampler: TraceSampler | None = None
    for processor in options.extra_span_processors:
        tracer_provider.add_span_processor(processor)
    if otlp.spans is not None:
        # With the meter provider, the SDK counts what it drops (queue full) in otel.sdk.processor.span.processed.
        exporting = BatchSpanProcessor(
            otlp.spans, meter_provider=meter_provider, max_export_batch_size=_batch_size(environ, "BSP")
        )
        sampled = instruments.traces_sampled
        share, slow_s = options.trace_sample_share, options.trace_slow_s
        sampler = TraceSampler(exporting, sampled, share=share, slow_s=slow_s)
        tracer_provider.add_span_processor(sampler)

    logger_provider = LoggerProvider(resource=resource)
    for exporter in options.extra_log_exporters:
        logger_provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    if otlp.logs is not None:
        exporting_logs: LogRecordProcessor = BatchLogRecordProcessor(
            otlp.logs, meter_provider=meter_provider, max_export_batch_size=_batch_size(environ, "BLRP")
        )
        if sampler is not None:  # INFO records of a trace leave with it or not at all (telemetry.sampling)
            exporting_logs = sampler.following_logs(exporting_logs)
        logger_provider.add_log_record_processor(WithoutTelemetryDiagnostics(exporting_logs))
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


def _hand_the_gil_over_sooner() -> None:
    """Let the event loop take the GIL back from an exporting thread within 0.5 ms rather than CPython's 5 ms.

    The batch processors and the metrics push encode protobuf in background threads. Every time the event loop
    releases the GIL (each socket read or write) such a thread may take it and keep it for a whole switch
    interval: with the default 5 ms, one export stalled the requests around it for tens of milliseconds. Measured
    on cached chat at a fixed 165 req/s with every trace exported, the p99 went from 20 ms to 10 ms, and with
    the smaller export batches (:data:`EXPORT_BATCH_SIZE`) to 7.8 ms; throughput did not change.
    """
    if sys.getswitchinterval() == DEFAULT_SWITCH_INTERVAL_S:  # unless the process chose its own
        sys.setswitchinterval(EXPORT_SWITCH_INTERVAL_S)


def _batch_size(environ: Mapping[str, str], processor: str) -> int | None:
    """The spans or log records one export encodes at a time: ``OTEL_{BSP,BLRP}_MAX_EXPORT_BATCH_SIZE`` when
    set (the SDK reads it), else :data:`EXPORT_BATCH_SIZE`, so that no single encoding runs long."""
    return None if environ.get(f"OTEL_{processor}_MAX_EXPORT_BATCH_SIZE", "").strip() else EXPORT_BATCH_SIZE


def _metric_readers(
    registry: CollectorRegistry | None, otlp: OtlpExporters, environ: Mapping[str, str]
) -> list[MetricReader]:
    """``/metrics`` and OTLP from one reader when both are wanted (:mod:`telemetry.metric_reader`), so each
    measurement is aggregated once; two readers only when the OTLP exporter asks for delta temporality."""
    interval_s = export_interval_s(environ)
    if registry is not None and otlp.metrics is not None and exports_cumulative(otlp.metrics):
        return [ScrapedAndPushedReader(registry, otlp.metrics, interval_s=interval_s, timeout_s=otlp.timeout_s)]
    readers: list[MetricReader] = []
    if registry is not None:
        readers.append(PrometheusMetricReader(registry=registry))
    if otlp.metrics is not None:
        readers.append(
            PeriodicExportingMetricReader(
                otlp.metrics, export_interval_millis=interval_s * 1000, export_timeout_millis=otlp.timeout_s * 1000
            )
        )
    return readers


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
