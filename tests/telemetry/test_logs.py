"""Logs lead to traces: each request writes one access-log record that carries its trace and span ids and the
request's context, by one path: an OpenTelemetry log record when logs are exported, else a JSON line on stdout.

``configure_logging`` replaces the root logger's handlers; the ``restore_logging`` fixture puts them back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from typing import Any

import pytest
from opentelemetry._logs import LogRecord, SeverityNumber

from telemetry.logs import ACCESS_LOGGER, AccessLogPath, OpenTelemetryHandler, configure_logging
from tests.fake_openai import FakeOpenAI, fake_openai, openai_env
from tests.support import token
from tests.telemetry import QUESTION, Recorder, Serve, attributes, hex_span_id, kb_with_handbook, sse_events

__all__ = ["fake_openai"]  # the fixture, imported for pytest

pytestmark = pytest.mark.usefixtures("restore_logging")

CLOCK_SLACK_MS = 0.5
"""Latencies are measured with ``perf_counter``, span times with the wall clock: they may differ a little."""


def _json_lines(stdout: str) -> list[dict[str, Any]]:
    """Every line of ``stdout``, each of which must be one JSON object."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]
    assert all(isinstance(line, dict) for line in parsed)
    return parsed


def _access_lines(lines: list[dict[str, Any]], trace_id: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["logger"] == "ragwatch.access" and line.get("trace_id") == trace_id]


def _access_records(recorder: Recorder, trace_id: str) -> list[LogRecord]:
    return [
        record
        for record in recorder.log_records()
        if record.trace_id == int(trace_id, 16) and str(record.body).startswith(("GET ", "POST ", "DELETE "))
    ]


def test_a_chat_request_writes_one_json_access_line_that_leads_to_its_trace(
    recorder: Recorder, serve: Serve, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(recorder.telemetry, "INFO", "json")
    with serve(recorder) as (_, client):
        kb_id = kb_with_handbook(client)
        reply = client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION})
        trace = recorder.trace(reply.json()["trace_id"])
        again = client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION})
        trace_again = recorder.trace(again.json()["trace_id"])

    assert reply.status_code == 200, reply.text
    lines = _json_lines(capsys.readouterr().out)
    [line] = _access_lines(lines, trace.trace_id)
    [line_again] = _access_lines(lines, trace_again.trace_id)
    assert (line["cache"], line_again["cache"]) == ("miss", "hit")  # the answer cache's outcome
    assert line["severity"] == "INFO"
    assert line["message"] == "POST /v1/chat 200"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["timestamp"])
    assert line["span_id"] == hex_span_id(trace.server)
    assert line["route"] == "/v1/chat"
    assert line["http.response.status_code"] == 200
    assert line["tenant_id"] == "acme"
    assert line["user_id"] == "alice"
    assert line["kb_id"] == kb_id
    assert line["question_length"] == len(QUESTION)
    assert trace.server.start_time is not None
    assert trace.server.end_time is not None
    # Measured inside the server span (with another clock: a little slack).
    assert 0 < line["latency_ms"] <= (trace.server.end_time - trace.server.start_time) / 1e6 + CLOCK_SLACK_MS
    assert QUESTION not in json.dumps(line)  # its length, never its text


def test_a_chat_request_emits_one_opentelemetry_access_record_in_its_trace_and_no_line(
    recorder: Recorder, serve: Serve, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(recorder.telemetry, "INFO", "json", access_log="otlp")
    with serve(recorder) as (_, client):
        kb_id = kb_with_handbook(client)
        reply = client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION})
        trace = recorder.trace(reply.json()["trace_id"])

    assert reply.status_code == 200, reply.text
    assert _access_lines(_json_lines(capsys.readouterr().out), trace.trace_id) == []  # one path, not two
    [record] = _access_records(recorder, trace.trace_id)
    assert record.body == "POST /v1/chat 200"
    assert trace.server.context is not None
    assert record.span_id == trace.server.context.span_id
    assert record.severity_number is SeverityNumber.INFO
    assert record.severity_text == "INFO"
    fields = dict(record.attributes or {})
    assert fields["route"] == "/v1/chat"
    assert fields["http.response.status_code"] == 200
    assert fields["tenant_id"] == "acme"
    assert fields["user_id"] == "alice"
    assert fields["kb_id"] == kb_id
    assert fields["question_length"] == len(QUESTION)
    latency_ms = fields["latency_ms"]
    assert isinstance(latency_ms, float)
    assert latency_ms > 0
    assert fields["trace_id"] == trace.trace_id  # the same fields as the JSON line, for a backend that shows those
    assert fields["span_id"] == hex_span_id(trace.server)
    assert QUESTION not in str(fields.values())


def test_a_streamed_answer_is_logged_once_all_of_it_has_been_sent(
    recorder: Recorder, serve: Serve, fake_openai: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_openai.chunk_delay_s = 0.02  # a stream that lasts: its end is well after its start
    configure_logging(recorder.telemetry, "INFO", "json")
    with serve(recorder, **openai_env(fake_openai.base_url, RAGWATCH_EMBEDDER="hashing")) as (_, client):
        kb_id = kb_with_handbook(client)
        reply = client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION, "stream": True})
        trace = recorder.trace(json.loads(sse_events(reply.text)[-1][1])["trace_id"])

    [line] = _access_lines(_json_lines(capsys.readouterr().out), trace.trace_id)
    assert line["message"] == "POST /v1/chat 200"
    assert line["kb_id"] == kb_id
    # The latency covers the whole stream, up to the answer's last token, not just the time to its first event.
    retrieve, answer = trace.named("rag.retrieve"), trace.named("chat gpt-4o-mini")
    assert retrieve.start_time is not None
    assert answer.end_time is not None
    streamed_ms = (answer.end_time - retrieve.start_time) / 1e6
    assert streamed_ms > 100
    assert line["latency_ms"] >= streamed_ms - CLOCK_SLACK_MS


def test_a_refused_request_is_logged_with_its_trace_and_status_but_no_caller(
    recorder: Recorder, serve: Serve, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(recorder.telemetry, "INFO", "json")
    with serve(recorder) as (server, _), server.client({"Authorization": f"Bearer {token()}x"}) as stranger:
        reply = stranger.post("/v1/chat", json={"kb_id": "kb_whatever", "question": QUESTION})
        trace = recorder.trace_of(reply)

    assert reply.status_code == 401
    [line] = _access_lines(_json_lines(capsys.readouterr().out), trace.trace_id)
    assert line["message"] == "POST /v1/chat 401"
    assert line["http.response.status_code"] == 401
    assert line["span_id"] == hex_span_id(trace.server)
    assert line["route"] == "/v1/chat"
    assert "tenant_id" not in line
    assert "user_id" not in line
    assert _access_records(recorder, trace.trace_id) == []  # logs are not exported: the line is the record


@pytest.mark.parametrize(
    ("exported", "setting", "path"),
    [(True, "auto", "otlp"), (False, "auto", "stdout"), (True, "stdout", "stdout"), (True, "off", "off")],
)
def test_the_access_log_takes_one_path(recorder: Recorder, exported: bool, setting: AccessLogPath, path: str) -> None:
    telemetry = dataclasses.replace(recorder.telemetry, otlp_signals=frozenset({"logs"} if exported else ()))
    configure_logging(telemetry, "INFO", "json", access_log=setting)
    access = logging.getLogger(ACCESS_LOGGER)
    assert access.disabled == (path == "off")
    assert not access.propagate
    [handler] = access.handlers
    assert isinstance(handler, OpenTelemetryHandler if path == "otlp" else logging.StreamHandler)


def test_the_text_format_writes_one_readable_line_per_request(
    recorder: Recorder, serve: Serve, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(recorder.telemetry, "INFO", "text")
    with serve(recorder) as (_, client):
        kb_id = kb_with_handbook(client)
        reply = client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION})
        trace = recorder.trace(reply.json()["trace_id"])

    stdout = capsys.readouterr().out
    [line] = [line for line in stdout.splitlines() if f"trace_id={trace.trace_id}" in line]
    match = re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} INFO +ragwatch\.access: POST /v1/chat 200  (?P<fields>.+)", line)
    assert match is not None, line
    fields = dict(pair.split("=", 1) for pair in match["fields"].split(" "))
    assert fields["span_id"] == hex_span_id(trace.server)
    assert fields["route"] == "/v1/chat"
    assert fields["tenant_id"] == "acme"
    assert fields["user_id"] == "alice"
    assert fields["kb_id"] == kb_id
    assert fields["question_length"] == str(len(QUESTION))
    assert fields["http.response.status_code"] == "200"
    assert float(fields["latency_ms"]) > 0
    assert not any(line.lstrip().startswith("{") for line in stdout.splitlines())


def test_configure_logging_replaces_the_root_handlers_and_silences_uvicorns_access_log(recorder: Recorder) -> None:
    root = logging.getLogger()
    stray = logging.NullHandler()
    root.addHandler(stray)

    configure_logging(recorder.telemetry, "WARNING", "json")

    assert stray not in root.handlers
    assert root.level == logging.WARNING
    assert logging.getLogger("uvicorn.access").disabled  # ragwatch writes its own, with the trace id
    # Stdout and, with the SDK enabled, OpenTelemetry: log records reach the collector beside the JSON lines.
    assert len(root.handlers) == 2


def test_server_span_attributes_and_the_access_log_name_the_same_tenant_and_knowledge_base(
    recorder: Recorder, serve: Serve, capsys: pytest.CaptureFixture[str]
) -> None:
    """From a log line, the trace search ``rag.tenant.id`` / ``rag.kb.id`` finds the same request."""
    configure_logging(recorder.telemetry, "INFO", "json")
    with serve(recorder) as (_, client):
        kb_id = kb_with_handbook(client)
        reply = client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION})
        trace = recorder.trace(reply.json()["trace_id"])

    [line] = _access_lines(_json_lines(capsys.readouterr().out), trace.trace_id)
    server = attributes(trace.server)
    assert (server["rag.tenant.id"], server["rag.kb.id"]) == (line["tenant_id"], line["kb_id"])
    assert server["http.route"] == line["route"]


def test_a_record_logged_with_an_exception_carries_it_and_the_span_it_was_logged_in(
    recorder: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(recorder.telemetry, "INFO", "json")
    with recorder.telemetry.tracer.start_as_current_span("work") as span:
        try:
            raise ValueError("the index is missing")
        except ValueError:
            logging.getLogger("ragwatch.store").exception("maintenance failed", extra={"table": "chunks"})

    [record] = [record for record in recorder.log_records() if record.body == "maintenance failed"]
    assert record.trace_id == span.get_span_context().trace_id
    assert record.span_id == span.get_span_context().span_id
    assert record.severity_number is SeverityNumber.ERROR
    fields = dict(record.attributes or {})
    assert fields["table"] == "chunks"
    assert fields["exception.type"] == "ValueError"
    assert fields["exception.message"] == "the index is missing"
    assert "raise ValueError" in str(fields["exception.stacktrace"])
    assert (
        fields["code.function.name"]
        == "test_a_record_logged_with_an_exception_carries_it_and_the_span_it_was_logged_in"
    )
    [line] = [line for line in _json_lines(capsys.readouterr().out) if line["message"] == "maintenance failed"]
    assert line["severity"] == "ERROR"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert "ValueError: the index is missing" in line["exception"]


def test_the_sdks_own_records_stay_on_stdout_and_are_not_exported_through_the_pipeline_they_report_on(
    recorder: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(recorder.telemetry, "INFO", "json")
    logging.getLogger("opentelemetry.exporter.otlp.proto.http._log_exporter").warning("Failed to export logs batch")
    logging.getLogger("ragwatch.telemetry").warning("an export failed")

    bodies = [record.body for record in recorder.log_records()]
    assert "Failed to export logs batch" not in bodies
    assert "an export failed" in bodies
    messages = [line["message"] for line in _json_lines(capsys.readouterr().out)]
    assert "Failed to export logs batch" in messages
    assert "an export failed" in messages
