"""Fixtures of the telemetry tests: a clean ``OTEL_*`` environment, in-memory telemetry, a served app, logging."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from telemetry import TelemetryOptions, setup_telemetry
from tests.support import LiveServer, auth, live_server, make_settings
from tests.telemetry import Recorder, RecorderFactory, Serve, logging_restored


@pytest.fixture(autouse=True)
def otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``OTEL_*`` variable of the test process reaches the SDK: no collector endpoint, sampler or resource.

    A test that wants one sets it with ``monkeypatch``.
    """
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def recorder_factory() -> Iterator[RecorderFactory]:
    """``recorder_factory(**options)``: telemetry from ``setup_telemetry`` (and the environment) that also keeps
    every span, metric and log record in memory; ``options`` are further :class:`TelemetryOptions`."""
    made: list[Recorder] = []

    def make(**options: Any) -> Recorder:
        spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
        logs = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
        telemetry = setup_telemetry(
            TelemetryOptions(
                service_version="test",
                extra_span_processors=[SimpleSpanProcessor(spans)],
                extra_metric_readers=[reader],
                extra_log_exporters=[logs],
                **options,
            )
        )
        recorder = Recorder(telemetry, spans, reader, logs)
        made.append(recorder)
        return recorder

    yield make
    for recorder in made:
        recorder.telemetry.shutdown()


@pytest.fixture
def recorder(recorder_factory: RecorderFactory) -> Recorder:
    """Telemetry with the default options, recorded in memory."""
    return recorder_factory()


@pytest.fixture
def serve(tmp_path: Path) -> Serve:
    """``with serve(recorder, **env) as (server, client)``: the real app over HTTP with ``recorder``'s telemetry and
    the settings ``env`` chooses, and a client of tenant ``acme`` (user ``alice``, admin)."""
    count = 0

    @contextmanager
    def start(recorder: Recorder, **env: str) -> Iterator[tuple[LiveServer, httpx.Client]]:
        nonlocal count
        count += 1
        data_dir = tmp_path / f"data-{count}"
        data_dir.mkdir()
        with (
            live_server(make_settings(data_dir, **env), telemetry=recorder.telemetry) as server,
            server.client(auth()) as client,
        ):
            yield server, client

    return start


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Puts back the root logger's handlers and level, and the loggers ``configure_logging`` silences."""
    with logging_restored():
        yield
