"""A minimal OTLP/HTTP collector for the benchmark: decodes every export, counts what it holds, keeps nothing.

``POST /v1/traces``, ``/v1/metrics`` and ``/v1/logs`` answer 200 with an empty export response; ``GET /stats``
returns the running counts as JSON. It decodes each body (as a real collector must) so that the counts are
exact spans and log records, which the benchmark compares with what the service reports it dropped.

    python -m bench.otlp_sink --port 4318
"""

from __future__ import annotations

import argparse
import gzip
import json
import threading
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

_lock = threading.Lock()
_counts: dict[str, int] = {
    "trace_exports": 0,
    "spans": 0,
    "log_exports": 0,
    "log_records": 0,
    "metric_exports": 0,
    "metric_points": 0,
    "bytes": 0,
}


def _count_spans(body: bytes) -> int:
    request = trace_service_pb2.ExportTraceServiceRequest()
    request.ParseFromString(body)
    return sum(len(scope.spans) for batch in request.resource_spans for scope in batch.scope_spans)


def _count_logs(body: bytes) -> int:
    request = logs_service_pb2.ExportLogsServiceRequest()
    request.ParseFromString(body)
    return sum(len(scope.log_records) for batch in request.resource_logs for scope in batch.scope_logs)


def _count_points(body: bytes) -> int:
    request = metrics_service_pb2.ExportMetricsServiceRequest()
    request.ParseFromString(body)
    points = 0
    for batch in request.resource_metrics:
        for scope in batch.scope_metrics:
            for metric in scope.metrics:
                kind = metric.WhichOneof("data")
                if kind is not None:
                    points += len(getattr(metric, kind).data_points)
    return points


_ROUTES: dict[str, tuple[str, str, Callable[[bytes], int], Callable[[], Any]]] = {
    "/v1/traces": ("trace_exports", "spans", _count_spans, trace_service_pb2.ExportTraceServiceResponse),
    "/v1/logs": ("log_exports", "log_records", _count_logs, logs_service_pb2.ExportLogsServiceResponse),
    "/v1/metrics": ("metric_exports", "metric_points", _count_points, metrics_service_pb2.ExportMetricsServiceResponse),
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a collector behind an exporter's session

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        route = _ROUTES.get(self.path)
        if route is None:
            self._reply(404, b"", "text/plain")
            return
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        exports, items, count, response = route
        counted = count(body)
        with _lock:
            _counts[exports] += 1
            _counts[items] += counted
            _counts["bytes"] += len(body)
        self._reply(200, response().SerializeToString(), "application/x-protobuf")

    def do_GET(self) -> None:
        if self.path != "/stats":
            self._reply(404, b"", "text/plain")
            return
        with _lock:
            payload = json.dumps(_counts).encode()
        self._reply(200, payload, "application/json")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the counts are the output."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
