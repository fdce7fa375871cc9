"""OTLP export: what a real collector receives from ``ragwatch serve``; that nothing leaves the process without
one; and that a collector that is down, refuses or hangs changes no answer, is counted, and cannot hold up
the service's exit or grow its memory.

The collectors are tests/telemetry/otlp_receiver.py's real OTLP/HTTP and OTLP/gRPC endpoints. The service runs
as production runs it, ``python -m service serve`` in its own process configured by environment variables, so
its logs go through ``configure_logging``; a few promises about :func:`setup_telemetry` are checked in-process.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client.parser import text_string_to_metric_families

from service import __version__
from telemetry import Telemetry, TelemetryOptions, setup_telemetry
from tests.fake_openai import CHAT, openai_env, running_fake_openai
from tests.support import HANDBOOK, auth, create_kb, ingest
from tests.telemetry.otlp_receiver import (
    OtlpGrpcReceiver,
    OtlpHttpReceiver,
    Received,
    attributes,
    closed_port,
    ragwatch_serve,
    wait_until,
)

QUESTION = "How many days of paid vacation does an employee get?"
SIGNALS = ("traces", "metrics", "logs")
FAST_EXPORT = {
    "OTEL_METRIC_EXPORT_INTERVAL": "500",
    "OTEL_BSP_SCHEDULE_DELAY": "100",
    "OTEL_BLRP_SCHEDULE_DELAY": "100",
    "RAGWATCH_TRACE_SAMPLE_SHARE": "1",
}
"""Export every 100-500 ms instead of every 5-60 s, so the tests need not wait; and every trace (the tests
that check the sampling say otherwise)."""
SHUTDOWN_BOUND_S = 15.0
SERVER = Span.SpanKind.SPAN_KIND_SERVER


# --- scripted traffic -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    request: str
    """``{method} {route template}``, as the server span should be named."""
    status: int
    body: Any
    """The answer's body with what differs from run to run (ids, trace ids, timestamps) replaced."""
    trace_id: str
    """From the ``traceresponse`` header."""


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _scrub(item) for key, item in value.items() if key not in ("trace_id", "created_at")}
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    return value


def _events(text: str) -> list[tuple[str, Any]]:
    """The ``(event, data)`` pairs of a Server-Sent Events body."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((fields.get("event", "message"), json.loads(fields["data"])))
    return events


def _exchange(request: str, response: httpx.Response, kb_id: str) -> Exchange:
    text = response.text.replace(kb_id, "<kb>")
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        body: Any = [(event, _scrub(data)) for event, data in _events(text)]
    else:
        body = _scrub(json.loads(text)) if text else None
    version, trace_id, _span_id, _flags = response.headers["traceresponse"].split("-")
    assert version == "00"
    return Exchange(request, response.status_code, body, trace_id)


def scripted_traffic(client: httpx.Client) -> list[Exchange]:
    """Create a knowledge base, ingest, list, chat, chat streamed, ask for a missing one, send a bad chat."""
    created = client.post("/v1/knowledge-bases", json={"name": "handbook"})
    kb_id = created.json()["id"]
    documents = f"/v1/knowledge-bases/{kb_id}/documents"
    template = "/v1/knowledge-bases/{kb_id}"
    ask = {"kb_id": kb_id, "question": QUESTION}
    return [
        _exchange("POST /v1/knowledge-bases", created, kb_id),
        _exchange(
            f"POST {template}/documents",
            client.post(documents, json={"id": "handbook", "title": "Handbook", "text": HANDBOOK}),
            kb_id,
        ),
        _exchange(f"GET {template}/documents", client.get(documents), kb_id),
        _exchange("POST /v1/chat", client.post("/v1/chat", json=ask), kb_id),
        _exchange("POST /v1/chat", client.post("/v1/chat", json={**ask, "stream": True}), kb_id),
        _exchange(f"GET {template}", client.get("/v1/knowledge-bases/kb_missing"), kb_id),
        _exchange("POST /v1/chat", client.post("/v1/chat", json={"kb_id": kb_id}), kb_id),
    ]


# --- a healthy collector over OTLP/HTTP ------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    received: Received
    exchanges: list[Exchange]


def _server_spans(received: Received) -> list[Span]:
    return [span for span in received.spans() if span.kind == SERVER]


def _points(received: Received, name: str) -> list[Any]:
    points = []
    for metric in received.metrics():
        if metric.name == name:
            data = getattr(metric, metric.WhichOneof("data"))
            points.extend(data.data_points)
    return points


def _delivered(received: Received, exchanges: list[Exchange]) -> bool:
    """Every request's server span, access-log record and count have arrived, and a chat latency exemplar."""
    traced = {span.trace_id.hex() for span in _server_spans(received)}
    logged = {record.trace_id.hex() for record in received.log_records()}
    chat_points = [
        point
        for point in _points(received, "rag_request_duration")
        if attributes(point.attributes).get("endpoint") == "/v1/chat" and point.exemplars
    ]
    counted = {
        (point_attributes["method"], point_attributes["endpoint"], point_attributes["status"])
        for point_attributes in (attributes(point.attributes) for point in _points(received, "rag_requests"))
    }
    wanted = {exchange.trace_id for exchange in exchanges}
    answered = {(*exchange.request.split(" ", 1), str(exchange.status)) for exchange in exchanges}
    return wanted <= traced and wanted <= logged and answered <= counted and bool(chat_points)


@pytest.fixture(scope="module")
def http_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """``ragwatch serve`` exporting to a healthy OTLP/HTTP collector; the scripted traffic, and what arrived."""
    with OtlpHttpReceiver() as receiver:
        env = {
            **FAST_EXPORT,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": "ragwatch-under-test",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=staging,k8s.namespace.name=rag",
        }
        with ragwatch_serve(tmp_path_factory.mktemp("otlp-http"), **env) as served, served.client(auth()) as client:
            exchanges = scripted_traffic(client)
            wait_until(lambda: _delivered(receiver.received, exchanges), what="the export of every request")
    return Run(receiver.received, exchanges)


def test_the_scripted_traffic_answers_as_the_api_promises(http_run: Run) -> None:
    """The baseline the sick-collector runs are compared with is itself right."""
    assert [(exchange.request, exchange.status) for exchange in http_run.exchanges] == [
        ("POST /v1/knowledge-bases", 201),
        ("POST /v1/knowledge-bases/{kb_id}/documents", 201),
        ("GET /v1/knowledge-bases/{kb_id}/documents", 200),
        ("POST /v1/chat", 200),
        ("POST /v1/chat", 200),
        ("GET /v1/knowledge-bases/{kb_id}", 404),
        ("POST /v1/chat", 400),
    ]
    assert "twenty-five days" in http_run.exchanges[3].body["answer"]
    assert http_run.exchanges[4].body[-1][0] == "done"


def test_every_signal_arrives_under_one_resource_naming_the_service_its_version_instance_and_environment(
    http_run: Run,
) -> None:
    resources = [resource for signal in SIGNALS for resource in http_run.received.resources(signal)]
    assert {signal: bool(http_run.received.resources(signal)) for signal in SIGNALS} == dict.fromkeys(SIGNALS, True)

    instance_ids = {resource["service.instance.id"] for resource in resources}
    assert len(instance_ids) == 1
    assert uuid.UUID(str(instance_ids.pop()))
    for resource in resources:
        assert resource["service.name"] == "ragwatch-under-test"  # OTEL_SERVICE_NAME
        assert resource["service.version"] == __version__
        assert resource["deployment.environment.name"] == "staging"  # OTEL_RESOURCE_ATTRIBUTES
        assert resource["k8s.namespace.name"] == "rag"


def test_server_spans_are_named_by_method_and_route_template_never_by_the_raw_path(http_run: Run) -> None:
    spans = _server_spans(http_run.received)
    kb_id_seen = http_run.exchanges[0].body["id"]

    assert {span.name for span in spans} == {exchange.request for exchange in http_run.exchanges} | {
        "GET /health/live"  # the readiness probe of the test harness
    }
    for span in spans:
        route = attributes(span.attributes)["http.route"]
        assert span.name.endswith(f" {route}")
        assert kb_id_seen not in span.name
        assert kb_id_seen not in str(route)


def test_each_request_is_one_trace_with_the_id_the_client_was_told_and_its_pipeline_inside(http_run: Run) -> None:
    spans = http_run.received.spans()
    for exchange in http_run.exchanges:
        in_trace = [span for span in spans if span.trace_id.hex() == exchange.trace_id]
        [root] = [span for span in in_trace if not span.parent_span_id]
        assert root.kind == SERVER
        assert root.name == exchange.request
        assert attributes(root.attributes)["http.response.status_code"] == exchange.status

    chat = http_run.exchanges[3]
    chat_spans = {span.name for span in spans if span.trace_id.hex() == chat.trace_id}
    assert {"rag.retrieve", "embeddings hashing-384", "vector_search chunks", "chat extractive"} <= chat_spans


def test_metrics_arrive_under_their_instrument_names_with_route_templates(http_run: Run) -> None:
    names = {metric.name for metric in http_run.received.metrics()}
    assert {
        "rag_requests",
        "rag_request_duration",
        "rag_vector_db_queries",
        "rag_llm_calls",
        "rag_active_tenants",
        "gen_ai.client.operation.duration",
        "rag.retrieval.duration",
        "http.server.request.duration",
    } <= names

    requests = {
        (point_attributes["method"], point_attributes["endpoint"], point_attributes["status"])
        for point_attributes in (attributes(point.attributes) for point in _points(http_run.received, "rag_requests"))
    }
    assert {
        ("POST", "/v1/knowledge-bases", "201"),
        ("POST", "/v1/knowledge-bases/{kb_id}/documents", "201"),
        ("POST", "/v1/chat", "200"),
        ("GET", "/v1/knowledge-bases/{kb_id}", "404"),
        ("POST", "/v1/chat", "400"),
    } <= requests
    [duration] = {metric.unit for metric in http_run.received.metrics() if metric.name == "rag_request_duration"}
    assert duration == "s"


def test_log_records_carry_the_trace_and_span_of_the_request_they_describe(http_run: Run) -> None:
    records = http_run.received.log_records()
    server_span_ids = {span.trace_id.hex(): span.span_id.hex() for span in _server_spans(http_run.received)}
    for exchange in http_run.exchanges:
        [access] = [
            record
            for record in records
            if record.body.string_value == f"{exchange.request} {exchange.status}"
            and record.trace_id.hex() == exchange.trace_id
        ]
        assert access.span_id.hex() == server_span_ids[exchange.trace_id]
        assert access.severity_text == "INFO"
        assert attributes(access.attributes)["tenant_id"] == "acme"


def test_latency_histograms_carry_exemplars_that_lead_to_exported_traces(http_run: Run) -> None:
    traced = {span.trace_id.hex() for span in http_run.received.spans()}
    chats = {exchange.trace_id for exchange in http_run.exchanges if exchange.request == "POST /v1/chat"}
    for name in ("rag_request_duration", "rag.retrieval.duration", "gen_ai.client.operation.duration"):
        exemplars = [exemplar for point in _points(http_run.received, name) for exemplar in point.exemplars]
        assert exemplars, name
        assert {exemplar.trace_id.hex() for exemplar in exemplars} <= traced, name

    chat_exemplars = {
        exemplar.trace_id.hex()
        for point in _points(http_run.received, "rag_request_duration")
        if attributes(point.attributes)["endpoint"] == "/v1/chat"
        for exemplar in point.exemplars
    }
    assert chat_exemplars
    assert chat_exemplars <= chats


def test_what_is_still_queued_when_the_service_is_stopped_is_delivered_before_it_exits(tmp_path: Path) -> None:
    """With exports minutes apart, SIGTERM still delivers the last request's span, log record and metrics."""
    minutes = {
        "OTEL_METRIC_EXPORT_INTERVAL": "600000",
        "OTEL_BSP_SCHEDULE_DELAY": "600000",
        "RAGWATCH_TRACE_SAMPLE_SHARE": "1",
    }
    with OtlpHttpReceiver() as receiver:
        env = {**minutes, "OTEL_BLRP_SCHEDULE_DELAY": "600000", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}
        with ragwatch_serve(tmp_path, **env) as served, served.client(auth()) as client:
            created = client.post("/v1/knowledge-bases", json={"name": "last words"})
            assert created.status_code == 201
            assert receiver.received.spans() == []

    assert served.shutdown_s is not None
    assert served.shutdown_s < SHUTDOWN_BOUND_S
    assert "POST /v1/knowledge-bases" in {span.name for span in receiver.received.spans()}
    assert "POST /v1/knowledge-bases 201" in {record.body.string_value for record in receiver.received.log_records()}
    assert "rag_requests" in {metric.name for metric in receiver.received.metrics()}


# --- OTLP/gRPC --------------------------------------------------------------------------------------------


def test_over_grpc_the_collector_receives_spans_metrics_and_logs(tmp_path: Path) -> None:
    with OtlpGrpcReceiver() as receiver:
        env = {**FAST_EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
        with ragwatch_serve(tmp_path, **env) as served, served.client(auth()) as client:
            create_kb(client, "over grpc")
            received = receiver.received
            wait_until(lambda: "POST /v1/knowledge-bases" in {span.name for span in received.spans()}, what="span")
            wait_until(lambda: "rag_requests" in {metric.name for metric in received.metrics()}, what="metrics")
            wait_until(
                lambda: (
                    "POST /v1/knowledge-bases 201" in {record.body.string_value for record in received.log_records()}
                ),
                what="log record",
            )

    assert {resource["service.name"] for resource in receiver.received.resources("traces")} == {"ragwatch"}


# --- no endpoint: nothing leaves the process --------------------------------------------------------------

_CONNECT_SPY = """
import os, socket, sys

_log = open(os.environ["RAGWATCH_TEST_CONNECT_LOG"], "a", buffering=1)
_log.write("spying\\n")


def _spy(event, args):
    if event in ("socket.connect", "socket.sendto") and args[0].family in (socket.AF_INET, socket.AF_INET6):
        _log.write(f"{event} {args[1]!r}\\n")


sys.addaudithook(_spy)
"""


def test_without_an_otlp_endpoint_the_service_opens_no_network_connection(tmp_path: Path) -> None:
    """An audit hook in the service process records every outbound connection: serving traffic makes none."""
    spy_dir, connections = tmp_path / "spy", tmp_path / "connections.log"
    spy_dir.mkdir()
    (spy_dir / "sitecustomize.py").write_text(_CONNECT_SPY)
    env = {**FAST_EXPORT, "PYTHONPATH": str(spy_dir), "RAGWATCH_TEST_CONNECT_LOG": str(connections)}

    with ragwatch_serve(tmp_path / "data", **env) as served, served.client(auth()) as client:
        exchanges = scripted_traffic(client)
        time.sleep(1.5)  # several export intervals and batch delays: an exporter, had one been built, would try

    assert [exchange.status for exchange in exchanges] == [201, 201, 200, 200, 200, 404, 400]
    assert connections.read_text().splitlines() == ["spying"]


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({}, id="nothing-set"),
        pytest.param({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_HEADERS": "x=1"}, id="no-endpoint"),
        pytest.param({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, id="empty-endpoint"),
    ],
)
def test_without_an_otlp_endpoint_setup_builds_no_exporter(environ: dict[str, str]) -> None:
    telemetry = setup_telemetry(TelemetryOptions(service_version="test"), environ)
    try:
        assert telemetry.enabled
        assert telemetry.otlp_signals == frozenset()
        assert telemetry.registry is not None  # /metrics is still served
    finally:
        telemetry.shutdown()


def test_a_signal_given_its_own_endpoint_is_the_only_one_exported() -> None:
    with OtlpHttpReceiver() as receiver:
        environ = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{receiver.url}/v1/traces"}
        telemetry = setup_telemetry(TelemetryOptions(service_version="test"), environ)
        assert telemetry.otlp_signals == frozenset({"traces"})
        with telemetry.tracer.start_as_current_span("only traces"):
            telemetry.instruments.requests.add(1, {"method": "GET", "endpoint": "/x", "status": "200"})
        telemetry.shutdown()

    assert [span.name for span in receiver.received.spans()] == ["only traces"]
    assert receiver.received.attempts("metrics") == receiver.received.attempts("logs") == 0


# --- a collector that is down, refuses or hangs -----------------------------------------------------------


def _export_failures(client: httpx.Client) -> dict[str, float]:
    """``rag_telemetry_export_failures_total`` by signal, from ``/metrics``."""
    failures = dict.fromkeys(SIGNALS, 0.0)
    for family in text_string_to_metric_families(client.get("/metrics").text):
        if family.name == "rag_telemetry_export_failures":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    failures[sample.labels["signal"]] = sample.value
    return failures


@pytest.fixture
def sick_collector(request: pytest.FixtureRequest) -> Iterator[tuple[str, OtlpHttpReceiver | None]]:
    """The endpoint of a collector that is ``down`` (a closed port), ``refusing`` (503) or ``hanging``."""
    kind: str = request.param
    if kind == "down":
        yield f"http://127.0.0.1:{closed_port()}", None
        return
    with OtlpHttpReceiver("unavailable" if kind == "refusing" else "hang") as receiver:
        yield receiver.url, receiver


@pytest.mark.parametrize("sick_collector", ["down", "refusing", "hanging"], indirect=True)
def test_a_sick_collector_changes_no_answer_is_counted_and_does_not_hold_up_shutdown(
    sick_collector: tuple[str, OtlpHttpReceiver | None], http_run: Run, tmp_path: Path
) -> None:
    endpoint, receiver = sick_collector
    env = {**FAST_EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_TIMEOUT": "1"}

    with ragwatch_serve(tmp_path, **env) as served, served.client(auth()) as client:
        exchanges = scripted_traffic(client)
        first = wait_until(
            lambda: _export_failures(client) if all(_export_failures(client).values()) else None,
            what="an export failure of every signal",
        )
        client.get("/v1/knowledge-bases")  # one more span and access-log record to fail to export
        wait_until(
            lambda: all(
                now > before for now, before in zip(_export_failures(client).values(), first.values(), strict=True)
            ),
            what="the failures to grow",
        )

    assert len(exchanges) == len(http_run.exchanges)
    for answered, healthy in zip(exchanges, http_run.exchanges, strict=True):
        assert (answered.request, answered.status, answered.body) == (healthy.request, healthy.status, healthy.body)
    assert served.shutdown_s is not None
    assert served.shutdown_s < SHUTDOWN_BOUND_S
    if receiver is not None:  # the exporters did try
        assert all(receiver.received.attempts(signal) > 0 for signal in SIGNALS)


@pytest.fixture
def otel_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """``monkeypatch``, after removing every ``OTEL_*`` variable (the SDK's processors read the environment)."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    return monkeypatch


def _emit(telemetry: Telemetry, signal: str, name: str) -> None:
    if signal == "traces":
        telemetry.tracer.start_span(name).end()
    else:
        telemetry.logger_provider.get_logger("ragwatch.test").emit(body=name)


def _names(received: Received, signal: str) -> list[str]:
    if signal == "traces":
        return [span.name for span in received.spans()]
    return [record.body.string_value for record in received.log_records()]


@pytest.mark.parametrize(("signal", "prefix"), [("traces", "BSP"), ("logs", "BLRP")])
def test_while_the_collector_hangs_what_waits_for_export_is_bounded_by_the_queue(
    otel_env: pytest.MonkeyPatch, signal: str, prefix: str
) -> None:
    """1000 items produced while an export hangs: only the newest ``OTEL_*_MAX_QUEUE_SIZE`` wait, the rest drop."""
    queue, batch = 64, 16
    otel_env.setenv(f"OTEL_{prefix}_MAX_QUEUE_SIZE", str(queue))
    otel_env.setenv(f"OTEL_{prefix}_MAX_EXPORT_BATCH_SIZE", str(batch))
    otel_env.setenv(f"OTEL_{prefix}_SCHEDULE_DELAY", "20")
    with OtlpHttpReceiver("hang") as receiver:
        otel_env.setenv(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT", f"{receiver.url}/v1/{signal}")
        otel_env.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "30")
        telemetry = setup_telemetry(TelemetryOptions(service_version="test"))
        _emit(telemetry, signal, "first")
        wait_until(lambda: receiver.received.attempts(signal) == 1, what="the first export to hang")

        for number in range(1000):
            _emit(telemetry, signal, f"item {number}")
        receiver.release("accept")
        telemetry.shutdown()

    delivered = _names(receiver.received, signal)
    assert delivered[0] == "first"
    assert len(delivered) <= 1 + queue
    assert "item 999" in delivered  # the newest are kept, the oldest dropped
    assert "item 0" not in delivered


def test_shutdown_returns_within_its_deadline_while_the_collector_hangs(otel_env: pytest.MonkeyPatch) -> None:
    """Exports that would wait 20 s for the collector do not hold up a shutdown whose deadline is 0.5 s."""
    with OtlpHttpReceiver("hang") as receiver:
        otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        otel_env.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "20")
        telemetry = setup_telemetry(TelemetryOptions(service_version="test", shutdown_timeout_s=0.5))
        with telemetry.tracer.start_as_current_span("request"):
            telemetry.instruments.requests.add(1, {"method": "GET", "endpoint": "/x", "status": "200"})
            telemetry.logger_provider.get_logger("ragwatch.test").emit(body="a record")

        started = time.monotonic()
        telemetry.shutdown()
        elapsed = time.monotonic() - started

        receiver.release("accept")  # let the abandoned exports finish before the next test
        for thread in threading.enumerate():
            if thread.name.startswith("ragwatch-shutdown-"):
                thread.join(timeout=30)

    assert elapsed < 10
    assert receiver.received.attempts("traces") >= 1


def test_opentelemetrys_own_complaints_stay_out_of_the_otlp_log_pipeline(otel_env: pytest.MonkeyPatch) -> None:
    """An exporter's "failed to export" record, sent over OTLP, would fail and complain again, without end."""
    with OtlpHttpReceiver() as receiver:
        telemetry = setup_telemetry(
            TelemetryOptions(service_version="test"), {"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": f"{receiver.url}/v1/logs"}
        )
        exporter_logger = telemetry.logger_provider.get_logger("opentelemetry.exporter.otlp.proto.http._log_exporter")
        exporter_logger.emit(body="Failed to export logs batch")
        telemetry.logger_provider.get_logger("ragwatch.access").emit(body="POST /v1/chat 200")
        telemetry.shutdown()

    assert [record.body.string_value for record in receiver.received.log_records()] == ["POST /v1/chat 200"]


# --- sampling ----------------------------------------------------------------------------------------------------


def test_by_default_every_error_trace_is_exported_whole_and_a_tenth_of_the_cached_hits(tmp_path: Path) -> None:
    """A burst of provider errors among hundreds of cached answers: every error trace arrives (with its chat
    span), about a tenth of the ordinary ones do, and what was kept and dropped is counted."""
    with OtlpHttpReceiver() as receiver, running_fake_openai() as fake:
        env = {
            **{name: value for name, value in FAST_EXPORT.items() if name != "RAGWATCH_TRACE_SAMPLE_SHARE"},
            **openai_env(fake.base_url, RAGWATCH_EMBEDDER="hashing"),
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "RAGWATCH_RATE_LIMIT_ENABLED": "false",
            # Cached hits never call the provider, so the burst's failures are consecutive: every one must reach
            # it here (the circuit breaker has tests of its own).
            "RAGWATCH_LLM_BREAKER_FAILURES": "1000",
        }
        with ragwatch_serve(tmp_path, **env) as served, served.client(auth()) as client:
            kb_id = create_kb(client, "handbook")
            ingest(client, kb_id, title="Handbook", text=HANDBOOK)
            time.sleep(0.6)  # past the settle interval, so the first answer is cached
            ask = {"kb_id": kb_id, "question": QUESTION}
            client.post("/v1/chat", json=ask).raise_for_status()
            hits, errors = [], []
            for number in range(400):
                if number % 20 == 10:
                    fake.fail_next(1, 500, path=CHAT)
                    failed = client.post("/v1/chat", json={**ask, "question": f"Question {number} about vacation?"})
                    assert failed.status_code == 502, failed.text
                    errors.append(failed.headers["traceresponse"].split("-")[1])
                else:
                    hit = client.post("/v1/chat", json=ask)
                    assert hit.json()["cached"] is True
                    hits.append(hit.json()["trace_id"])
            metrics = client.get("/metrics").text

            def traced() -> set[str]:
                return {span.trace_id.hex() for span in _server_spans(receiver.received)}

            wait_until(lambda: set(errors) <= traced(), what="every error trace")
            time.sleep(0.5)  # what else was kept has arrived too
            spans = receiver.received.spans()

    kept_hits = set(hits) & traced()
    assert 0.04 <= len(kept_hits) / len(hits) <= 0.18, len(kept_hits)
    for trace_id in errors:
        names = {span.name for span in spans if span.trace_id.hex() == trace_id}
        assert {"POST /v1/chat", "chat gpt-4o-mini"} <= names, names
    sampled = {
        (sample.labels["decision"], sample.labels["reason"]): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "rag_traces_sampled_total"
    }
    assert sampled[("kept", "error")] >= len(errors)
    assert sampled[("dropped", "share")] >= len(hits) - len(kept_hits) - 5
