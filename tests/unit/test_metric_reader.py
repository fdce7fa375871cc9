"""One metric pipeline: ``/metrics`` and the OTLP export read one aggregation (telemetry.metric_reader)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
    Sum,
)
from prometheus_client import CollectorRegistry, generate_latest

from telemetry import TelemetryOptions, setup_telemetry
from telemetry.metric_reader import ScrapedAndPushedReader


class Recording(MetricExporter):
    def __init__(self, temporality: AggregationTemporality = AggregationTemporality.CUMULATIVE) -> None:
        super().__init__(preferred_temporality={Counter: temporality})
        self.exports: list[dict[str, float]] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        values: dict[str, float] = {}
        for resource in metrics_data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:  # the counters (the SDK may add histograms of its own)
                    if isinstance(metric.data, Sum):
                        values[metric.name] = sum(point.value for point in metric.data.data_points)
        self.exports.append(values)
        return MetricExportResult.SUCCESS

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True


@pytest.fixture
def pipeline() -> Iterator[tuple[MeterProvider, ScrapedAndPushedReader, CollectorRegistry, Recording]]:
    registry, exporter = CollectorRegistry(), Recording()
    reader = ScrapedAndPushedReader(registry, exporter, interval_s=3600, timeout_s=5)
    provider = MeterProvider(metric_readers=[reader])
    yield provider, reader, registry, exporter
    provider.shutdown()


def _scraped(registry: CollectorRegistry, name: str) -> float:
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} is not on /metrics")


def test_a_measurement_reaches_both_the_scrape_and_the_export_from_one_aggregation(pipeline: Any) -> None:
    provider, reader, registry, exporter = pipeline
    requests = provider.get_meter("test").create_counter("rag.requests")
    requests.add(3, {"route": "/v1/chat"})
    assert _scraped(registry, "rag_requests_total") == 3
    reader.push()
    assert exporter.exports[-1]["rag.requests"] == 3


def test_scrapes_and_exports_stay_cumulative_whichever_comes_first(pipeline: Any) -> None:
    provider, reader, registry, exporter = pipeline
    requests = provider.get_meter("test").create_counter("rag.requests")
    requests.add(2)
    reader.push()
    _scraped(registry, "rag_requests_total")
    requests.add(5)
    assert _scraped(registry, "rag_requests_total") == 7
    reader.push()
    assert [export["rag.requests"] for export in exporter.exports] == [2, 7]


def test_shutdown_exports_what_was_counted_since_the_last_push() -> None:
    exporter = Recording()
    provider = MeterProvider(
        metric_readers=[ScrapedAndPushedReader(CollectorRegistry(), exporter, interval_s=3600, timeout_s=5)]
    )
    provider.get_meter("test").create_counter("rag.requests").add(4)
    provider.shutdown()
    assert exporter.exports[-1]["rag.requests"] == 4


def _readers(provider: Any) -> Sequence[object]:
    readers: Sequence[object] = provider._metric_readers
    return readers


def test_the_service_aggregates_each_measurement_once_when_it_serves_and_exports_metrics() -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    telemetry = setup_telemetry(TelemetryOptions(service_version="test", shutdown_timeout_s=0.1), environ)
    try:
        assert [type(reader) for reader in _readers(telemetry.meter_provider)] == [ScrapedAndPushedReader]
    finally:
        telemetry.shutdown()


def test_delta_temporality_for_otlp_keeps_the_scrape_on_its_own_cumulative_reader() -> None:
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta",
    }
    with pytest.MonkeyPatch.context() as patch:  # the OTLP exporter reads its temporality from the process
        patch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")
        telemetry = setup_telemetry(TelemetryOptions(service_version="test", shutdown_timeout_s=0.1), environ)
    try:
        kinds = {type(reader) for reader in _readers(telemetry.meter_provider)}
        assert kinds == {PrometheusMetricReader, PeriodicExportingMetricReader}
    finally:
        telemetry.shutdown()
