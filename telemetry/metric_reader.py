"""One metric pipeline for both destinations: ``/metrics`` scrapes and the periodic OTLP export.

The SDK aggregates every measurement once per reader, so the Prometheus reader and a
``PeriodicExportingMetricReader`` side by side would add each request's counters and histograms twice, on the
request's own thread. This reader aggregates once: a scrape renders what it has collected (as the Prometheus
reader does), and a background thread collects the same cumulative state every
``OTEL_METRIC_EXPORT_INTERVAL`` and hands it to the OTLP exporter.

The SDK has no reader with two outputs; this one adds the push half to the Prometheus reader, whose scrape
path stays the library's. Both outputs are cumulative, so it is used only when the OTLP exporter asks for
cumulative temporality (the default); with ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta`` the two
readers are kept apart (:func:`telemetry.setup.setup_telemetry`).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricExporter, MetricsData
from prometheus_client import CollectorRegistry

__all__ = ["ScrapedAndPushedReader", "exports_cumulative"]

logger = logging.getLogger("ragwatch.telemetry")


def exports_cumulative(exporter: MetricExporter) -> bool:
    """Whether ``exporter`` wants every instrument cumulative, as ``/metrics`` serves them."""
    preferred = (exporter._preferred_temporality or {}).values()  # as the SDK's own readers read it
    return all(temporality is AggregationTemporality.CUMULATIVE for temporality in preferred)


class ScrapedAndPushedReader(PrometheusMetricReader):
    def __init__(
        self, registry: CollectorRegistry, exporter: MetricExporter, *, interval_s: float, timeout_s: float
    ) -> None:
        super().__init__(registry=registry)
        self._exporter = exporter
        self._interval_s = interval_s
        self._timeout_ms = timeout_s * 1000
        self._pushing = threading.local()
        self._stopped = threading.Event()
        self._export_lock = threading.Lock()
        self._thread = threading.Thread(target=self._push_periodically, name="ragwatch-metrics-push", daemon=True)
        self._thread.start()

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        if getattr(self._pushing, "active", False):
            with self._export_lock, suppress_instrumentation():  # the export's own HTTP call is not traffic
                self._exporter.export(metrics_data, timeout_millis=timeout_millis)
        else:  # a scrape of /metrics
            super()._receive_metrics(metrics_data, timeout_millis, **kwargs)

    def push(self) -> None:
        """Collect now and export over OTLP (the background thread's step; also the final flush)."""
        self._pushing.active = True
        try:
            self.collect(timeout_millis=self._timeout_ms)
        except Exception:  # a failed export is counted by the exporter; the thread must live on
            logger.exception("metrics export failed")
        finally:
            self._pushing.active = False

    def _push_periodically(self) -> None:
        while not self._stopped.wait(self._interval_s):
            self.push()

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        self.push()
        return self._exporter.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._thread.join(timeout_millis / 1000)
        self.push()  # what was counted since the last export
        self._exporter.shutdown(timeout_millis=timeout_millis)
        super().shutdown(timeout_millis, **kwargs)
