"""Tests of what ragwatch tells operators about each request: traces, metrics and logs that lead to one another.

The helpers here read what a real server recorded through in-memory exporters that ``setup_telemetry`` adds
beside the environment's own (the fixtures in ``conftest.py`` build them).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from telemetry import Telemetry
from tests.support import HANDBOOK, LiveServer, create_kb, ingest

__all__ = [
    "QUESTION",
    "TRACEPARENT",
    "Recorder",
    "RecorderFactory",
    "Serve",
    "Trace",
    "attributes",
    "hex_span_id",
    "hex_trace_id",
    "kb_with_handbook",
    "sse_events",
    "wait_until",
]

QUESTION = "How many days of paid vacation does an employee get?"
OTHER_QUESTION = "When do unused vacation days expire?"
"""A second question the handbook answers, for a request that must not be answered from the cache."""
TRACEPARENT = re.compile(r"00-(?P<trace_id>[0-9a-f]{32})-(?P<span_id>[0-9a-f]{16})-(?P<flags>[0-9a-f]{2})")
"""A W3C ``traceparent`` (and ``traceresponse``) value of version 00."""


def hex_trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


def hex_span_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.span_id, "016x")


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.01)


@dataclass(frozen=True)
class Trace:
    """The finished spans of one trace, as a tree below its server span."""

    trace_id: str
    spans: tuple[ReadableSpan, ...]

    @property
    def server(self) -> ReadableSpan:
        [server] = [span for span in self.spans if span.kind is SpanKind.SERVER]
        return server

    def named(self, name: str) -> ReadableSpan:
        """The one span called ``name`` (fails when there is none, or several)."""
        matches = [span for span in self.spans if span.name == name]
        assert len(matches) == 1, f"{len(matches)} spans named {name!r} in {self.names()}"
        return matches[0]

    def names(self) -> list[str]:
        return sorted(span.name for span in self.spans)

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        """The spans whose parent is ``parent``, in the order they started."""
        assert parent.context is not None
        found = [
            span for span in self.spans if span.parent is not None and span.parent.span_id == parent.context.span_id
        ]
        return sorted(found, key=lambda span: span.start_time or 0)

    def child_names(self, parent: ReadableSpan) -> list[str]:
        return [span.name for span in self.children(parent)]

    def parent_of(self, span: ReadableSpan) -> ReadableSpan:
        assert span.parent is not None, f"{span.name} is a root span"
        [parent] = [candidate for candidate in self.spans if candidate.context.span_id == span.parent.span_id]
        return parent

    def is_one_tree(self) -> bool:
        """Every span but the server span has its parent in this trace (nothing dangles, nothing starts anew)."""
        ids = {span.context.span_id for span in self.spans}
        server = self.server
        return all(span is server or (span.parent is not None and span.parent.span_id in ids) for span in self.spans)


@dataclass(frozen=True)
class Recorder:
    """A :class:`Telemetry` whose spans, metrics and log records are also kept in memory for a test to read."""

    telemetry: Telemetry
    span_exporter: InMemorySpanExporter
    metric_reader: InMemoryMetricReader
    log_exporter: InMemoryLogRecordExporter

    # --- traces ----------------------------------------------------------------------------------------------

    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.span_exporter.get_finished_spans()

    def trace(self, trace_id: str, timeout_s: float = 5.0) -> Trace:
        """The spans of ``trace_id`` once its server span has ended, which happens after the rest of its request.

        A client can hold the response before the server span ends, hence the wait.
        """

        def of_trace() -> tuple[ReadableSpan, ...]:
            return tuple(span for span in self.spans() if hex_trace_id(span) == trace_id)

        wait_until(lambda: any(span.kind is SpanKind.SERVER for span in of_trace()), f"the server span of {trace_id}")
        return Trace(trace_id, of_trace())

    def trace_of(self, response: httpx.Response) -> Trace:
        """The trace the ``traceresponse`` header of ``response`` names."""
        match = TRACEPARENT.fullmatch(response.headers.get("traceresponse", ""))
        assert match is not None, f"no traceresponse header in {dict(response.headers)}"
        return self.trace(match["trace_id"])

    # --- metrics ---------------------------------------------------------------------------------------------

    def points(self, name: str) -> list[NumberDataPoint | HistogramDataPoint]:
        """Every data point of the instrument ``name`` so far (cumulative)."""
        data = self.metric_reader.get_metrics_data()
        if data is None:
            return []
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
            if isinstance(point, NumberDataPoint | HistogramDataPoint)
        ]

    def _matching(self, name: str, labels: Mapping[str, object]) -> Iterator[NumberDataPoint | HistogramDataPoint]:
        for point in self.points(name):
            if all((point.attributes or {}).get(key) == value for key, value in labels.items()):
                yield point

    def counter(self, name: str, **labels: object) -> float:
        """The sum of the counter ``name`` over the series whose labels include ``labels``."""
        return sum(point.value for point in self._matching(name, labels) if isinstance(point, NumberDataPoint))

    def histogram(self, name: str, **labels: object) -> tuple[int, float]:
        """(count, sum) of the histogram ``name`` over the series whose labels include ``labels``."""
        points = [point for point in self._matching(name, labels) if isinstance(point, HistogramDataPoint)]
        return sum(point.count for point in points), sum(point.sum for point in points)

    # --- logs ------------------------------------------------------------------------------------------------

    def log_records(self) -> list[LogRecord]:
        """The OpenTelemetry log records emitted so far (the batch processor is flushed first)."""
        if isinstance(self.telemetry.logger_provider, LoggerProvider):
            self.telemetry.logger_provider.force_flush()
        return [readable.log_record for readable in self.log_exporter.get_finished_logs()]


RecorderFactory = Callable[..., Recorder]
"""The ``recorder_factory`` fixture: ``recorder_factory(**options)`` with further :class:`TelemetryOptions`."""
Serve = Callable[..., AbstractContextManager[tuple[LiveServer, httpx.Client]]]
"""The ``serve`` fixture: ``with serve(recorder, **env) as (server, client)``."""


def kb_with_handbook(client: httpx.Client) -> str:
    """A new knowledge base holding the handbook, as one document with the id ``handbook``."""
    kb_id = create_kb(client, "handbook")
    ingest(client, kb_id, title="Handbook", text=HANDBOOK, id="handbook")
    return kb_id


def sse_events(body: str) -> list[tuple[str, str]]:
    """(event, data) of each Server-Sent Event in ``body``."""
    events: list[tuple[str, str]] = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            events.append((fields["event"], fields.get("data", "")))
    return events


@contextmanager
def logging_restored() -> Iterator[None]:
    """Puts back the root logger's handlers and level, the access logger's, and the loggers
    ``configure_logging`` silences."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    silenced = {name: logging.getLogger(name).disabled for name in ("uvicorn.access", "ragwatch.access")}
    access = logging.getLogger("ragwatch.access")
    access_handlers, access_propagates = list(access.handlers), access.propagate
    try:
        yield
    finally:
        for handler in list(access.handlers):
            access.removeHandler(handler)
        for handler in access_handlers:
            access.addHandler(handler)
        access.propagate = access_propagates
        for handler in list(root.handlers):
            root.removeHandler(handler)
            if handler not in handlers:
                handler.close()
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        for name, disabled in silenced.items():
            logging.getLogger(name).disabled = disabled
