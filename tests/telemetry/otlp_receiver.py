"""Test collectors that speak OTLP, and a ``ragwatch serve`` subprocess to point at them.

:class:`OtlpHttpReceiver` is an OTLP/HTTP endpoint (``POST /v1/traces``, ``/v1/metrics``, ``/v1/logs``) on a
free port, served from a thread. It decodes each body (gzip or deflate aware) with opentelemetry-proto's
``Export*ServiceRequest`` messages and records it. Its :attr:`~OtlpHttpReceiver.behaviour` makes it a healthy
collector (``accept``), one that refuses (``unavailable``: 503) or one that never answers (``hang``: the
request is held until the receiver stops).

:class:`OtlpGrpcReceiver` is the same for OTLP/gRPC (the collector services of opentelemetry-proto).

:func:`ragwatch_serve` runs the real service as production does, ``python -m service serve`` in its own
process, with an environment of the caller's choice; leaving the block sends SIGTERM and measures how long
the process takes to exit.
"""

from __future__ import annotations

import gzip
import os
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, TypeVar

import grpc
import pytest
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.support import ServingProcess, free_port, serving_process, wait_until

__all__ = [
    "Behaviour",
    "OtlpGrpcReceiver",
    "OtlpHttpReceiver",
    "Received",
    "RunningRagwatch",
    "attributes",
    "closed_port",
    "ragwatch_serve",
    "wait_until",
]

Behaviour = Literal["accept", "unavailable", "hang"]
Signal = Literal["traces", "metrics", "logs"]
T = TypeVar("T")

_REQUESTS: dict[str, tuple[Signal, type[Message], type[Message]]] = {
    "/v1/traces": (
        "traces",
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    "/v1/metrics": (
        "metrics",
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    "/v1/logs": (
        "logs",
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
    ),
}


def _value(value: AnyValue) -> object:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, kind) if kind else None


def attributes(pairs: Any) -> dict[str, object]:
    """OTLP ``KeyValue`` pairs (a resource's, a span's, a data point's) as a plain dict."""
    result: dict[str, object] = {}
    for pair in pairs:
        assert isinstance(pair, KeyValue)
        result[pair.key] = _value(pair.value)
    return result


@dataclass
class Received:
    """What an OTLP receiver recorded: every decoded export request, by signal, and every attempt."""

    _lock: threading.Lock = field(default_factory=threading.Lock)
    _requests: list[tuple[Signal, Message]] = field(default_factory=list)
    _attempts: dict[Signal, int] = field(default_factory=lambda: {"traces": 0, "metrics": 0, "logs": 0})

    def record_attempt(self, signal_name: Signal) -> None:
        with self._lock:
            self._attempts[signal_name] += 1

    def record(self, signal_name: Signal, request: Message) -> None:
        with self._lock:
            self._requests.append((signal_name, request))

    def attempts(self, signal_name: Signal) -> int:
        """Export requests that arrived for ``signal_name``, answered or not."""
        with self._lock:
            return self._attempts[signal_name]

    def requests(self, signal_name: Signal) -> list[Any]:
        """The accepted export requests for ``signal_name``, decoded."""
        with self._lock:
            return [request for name, request in self._requests if name == signal_name]

    def resources(self, signal_name: Signal) -> list[dict[str, object]]:
        """The resource attributes of every resource batch received for ``signal_name``."""
        return [attributes(batch.resource.attributes) for batch in self._batches(signal_name)]

    def _batches(self, signal_name: Signal) -> list[Any]:
        field_name = {"traces": "resource_spans", "metrics": "resource_metrics", "logs": "resource_logs"}[signal_name]
        return [batch for request in self.requests(signal_name) for batch in getattr(request, field_name)]

    def spans(self) -> list[Span]:
        return [span for batch in self._batches("traces") for scope in batch.scope_spans for span in scope.spans]

    def metrics(self) -> list[Metric]:
        return [
            metric for batch in self._batches("metrics") for scope in batch.scope_metrics for metric in scope.metrics
        ]

    def log_records(self) -> list[LogRecord]:
        return [record for batch in self._batches("logs") for scope in batch.scope_logs for record in scope.log_records]

    def resource_of_spans(self) -> list[Resource]:
        return [batch.resource for batch in self._batches("traces")]


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer

    def do_POST(self) -> None:
        receiver = self.server.receiver
        route = _REQUESTS.get(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if route is None:
            self._reply(404, b"")
            return
        signal_name, request_type, response_type = route
        receiver.received.record_attempt(signal_name)
        if receiver.behaviour == "hang":
            receiver.released.wait()  # then answered as the receiver behaves by then
        if receiver.behaviour != "accept":
            self._reply(503, b"")
            return
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        request = request_type()
        request.ParseFromString(body)
        receiver.received.record(signal_name, request)
        self._reply(200, response_type().SerializeToString())

    def _reply(self, status: int, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the exporter gave up waiting (``hang``)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read what was received, not an access log."""


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handlers, so none outlives the receiver
    receiver: OtlpHttpReceiver


class OtlpHttpReceiver:
    """An OTLP/HTTP collector on ``127.0.0.1``; use it as a context manager."""

    def __init__(self, behaviour: Behaviour = "accept") -> None:
        self.behaviour: Behaviour = behaviour
        self.received = Received()
        self.released = threading.Event()
        """Set by :meth:`release` or when the receiver stops: held (``hang``) requests are then answered."""
        self._server = _HttpServer(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-http-receiver", daemon=True)

    def __enter__(self) -> OtlpHttpReceiver:
        self._thread.start()
        return self

    def release(self, behaviour: Behaviour = "accept") -> None:
        """Answer the held requests, and every later one, as ``behaviour`` says."""
        self.behaviour = behaviour
        self.released.set()

    def __exit__(self, *_: object) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


class _Servicer(
    trace_service_pb2_grpc.TraceServiceServicer,
    metrics_service_pb2_grpc.MetricsServiceServicer,
    logs_service_pb2_grpc.LogsServiceServicer,
):
    def __init__(self, received: Received) -> None:
        self._received = received

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - the gRPC method name
        for signal_name, request_type, response_type in _REQUESTS.values():
            if isinstance(request, request_type):
                self._received.record_attempt(signal_name)
                self._received.record(signal_name, request)
                return response_type()
        raise TypeError(f"unexpected request {type(request)}")


class OtlpGrpcReceiver:
    """An OTLP/gRPC collector (traces, metrics and logs services) on ``127.0.0.1``; a context manager."""

    def __init__(self) -> None:
        self.received = Received()
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-grpc-receiver")
        self._server = grpc.server(self._executor)
        servicer = _Servicer(self.received)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(servicer, self._server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(servicer, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> OtlpGrpcReceiver:
        self._server.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.stop(grace=None).wait(timeout=10)
        self._executor.shutdown(wait=True)


def closed_port() -> int:
    """A local port nothing listens on: connecting to it is refused at once."""
    return free_port()


@contextmanager
def exporting_to_nowhere() -> Iterator[None]:
    """This process's environment, for the telemetry set up inside the block, with no ``OTEL_*`` variable but
    an OTLP endpoint where nothing listens, short export timeouts and batch delays: every signal is exported
    (so the SDK's own processor metrics exist) and every export fails quickly (so the failures are counted)."""
    with pytest.MonkeyPatch.context() as env:
        for name in [name for name in os.environ if name.startswith("OTEL_")]:
            env.delenv(name)
        env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
        env.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0.5")
        env.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        env.setenv("OTEL_BLRP_SCHEDULE_DELAY", "50")
        yield


# --- the service in its own process ---------------------------------------------------------------------


RunningRagwatch = ServingProcess
"""A ``ragwatch serve`` subprocess: its ``url``, ``process``, ``log_file``, ``output()``, and once the block of
:func:`ragwatch_serve` has been left, its ``exit_code`` and ``shutdown_s`` (seconds from SIGTERM to exit)."""


@contextmanager
def ragwatch_serve(data_dir: Path, *args: str, stop_timeout_s: float = 30, **env: str) -> Iterator[RunningRagwatch]:
    """``ragwatch serve`` on a free port with ``env`` (and no other ragwatch, OpenAI or OTEL variable), until SIGTERM.

    ``data_dir`` holds the LanceDB data and ``serve.log``, the process's stdout and stderr. Ready once
    ``/health/live`` answers (readiness may be degraded by the collector under test).
    """
    with serving_process(data_dir, *args, ready_path="/health/live", stop_timeout_s=stop_timeout_s, **env) as running:
        yield running
