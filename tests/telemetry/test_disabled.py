"""``OTEL_SDK_DISABLED=true``: the service answers exactly as it does traced, and records nothing.

What a disabled service does differently, and only that:

* the ``trace_id`` of an answer is 32 zeros, and responses carry no ``traceresponse`` header;
* a caller's own ``traceparent`` passes through untouched: the answer's ``trace_id`` and the ``traceresponse``
  header are the caller's (the service adds no span of its own);
* ``/metrics`` answers 200 with an empty body;
* log lines are still written to stdout, without trace ids, and no OpenTelemetry log record is emitted.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest

from telemetry.logs import configure_logging
from tests.support import HANDBOOK, create_kb, documents_url, token
from tests.telemetry import QUESTION, Recorder, RecorderFactory, Serve, kb_with_handbook, sse_events

ZERO_TRACE_ID = "0" * 32


_DIFFERING = frozenset({"trace_id", "created_at", "id"})
"""Fields that differ between two runs anyway: the trace, the time, and the new knowledge base's id."""


def _without_differing(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_differing(v) for k, v in value.items() if k not in _DIFFERING}
    if isinstance(value, list):
        return [_without_differing(item) for item in value]
    return value


def _normalized(response: httpx.Response, kb_id: str) -> Any:
    """The response body without what differs between two runs (the knowledge base id also names chunks)."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        body: Any = [[name, json.loads(data)] for name, data in sse_events(response.text)]
    else:
        body = response.json()
    return _without_differing(json.loads(json.dumps(body).replace(kb_id, "<kb>")))


def _exchange(client: httpx.Client, stranger: httpx.Client) -> tuple[str, dict[str, httpx.Response]]:
    """The requests both runs make: the happy path, a stream, and refusals."""
    kb_id = create_kb(client, "handbook")
    document = {"title": "Handbook", "text": HANDBOOK, "id": "handbook"}
    return kb_id, {
        "ingest": client.post(documents_url(kb_id), json=document),
        "chat": client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION}),
        "stream": client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION, "stream": True}),
        "off-topic": client.post("/v1/chat", json={"kb_id": kb_id, "question": "Which rocket engine powers Saturn?"}),
        "detail": client.get(f"/v1/knowledge-bases/{kb_id}"),
        "documents": client.get(documents_url(kb_id)),
        "unknown kb": client.post("/v1/chat", json={"kb_id": "kb_0000000000000000000", "question": QUESTION}),
        "bad request": client.post("/v1/chat", json={"kb_id": kb_id}),
        "refused": stranger.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION}),
    }


def _trace_id(response: httpx.Response) -> str:
    if response.headers["content-type"].startswith("text/event-stream"):
        return str(json.loads(sse_events(response.text)[-1][1])["trace_id"])
    return str(response.json()["trace_id"])


@pytest.fixture
def disabled(recorder_factory: RecorderFactory, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Telemetry built with ``OTEL_SDK_DISABLED=true`` (and in-memory exporters that must stay empty)."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    recorder = recorder_factory()
    assert not recorder.telemetry.enabled
    return recorder


@pytest.mark.usefixtures("restore_logging")
def test_a_disabled_sdk_answers_every_request_as_a_traced_service_does_and_records_nothing(
    recorder: Recorder, disabled: Recorder, serve: Serve, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_token = {"Authorization": f"Bearer {token()}x"}
    with serve(recorder) as (server, client), server.client(bad_token) as stranger:
        traced_kb, traced = _exchange(client, stranger)
    capsys.readouterr()
    configure_logging(disabled.telemetry, "INFO", "json")
    with serve(disabled) as (server, client), server.client(bad_token) as stranger:
        untraced_kb, untraced = _exchange(client, stranger)
        metrics = client.get("/metrics")

    assert traced.keys() == untraced.keys()
    for name, response in untraced.items():
        assert response.status_code == traced[name].status_code, name
        assert response.headers["content-type"] == traced[name].headers["content-type"], name
        assert _normalized(response, untraced_kb) == _normalized(traced[name], traced_kb), name
        assert "traceresponse" in traced[name].headers, name
        assert "traceresponse" not in response.headers, name
    assert [untraced[name].status_code for name in ("ingest", "chat", "stream", "unknown kb", "refused")] == [
        201,
        200,
        200,
        404,
        401,
    ]
    for name in ("chat", "stream", "off-topic"):
        assert _trace_id(traced[name]) != ZERO_TRACE_ID
        assert _trace_id(untraced[name]) == ZERO_TRACE_ID

    assert metrics.status_code == 200
    assert metrics.content == b""
    assert disabled.spans() == ()
    assert disabled.points("rag_requests") == []
    assert disabled.log_records() == []

    # Logs still go to stdout, with the request's context but without trace ids, and nowhere else.
    assert len(logging.getLogger().handlers) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    access = [line for line in lines if line["logger"] == "ragwatch.access" and line["message"] == "POST /v1/chat 200"]
    assert access
    assert all("trace_id" not in line and "span_id" not in line for line in lines)
    assert all(line["tenant_id"] == "acme" and line["route"] == "/v1/chat" for line in access)


def test_a_disabled_sdk_passes_a_callers_trace_context_through(disabled: Recorder, serve: Serve) -> None:
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with serve(disabled) as (_, client):
        kb_id = create_kb(client, "handbook")
        reply = client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION}, headers={"traceparent": caller})

    assert reply.status_code == 200, reply.text
    assert reply.json()["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert reply.headers["traceresponse"] == caller  # no span of its own: the caller's context, unchanged
    assert disabled.spans() == ()


def test_only_the_value_true_disables_the_sdk(
    recorder_factory: RecorderFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    for value, enabled in (
        ("true", False),
        ("TRUE", False),
        (" true ", False),
        ("false", True),
        ("1", True),
        ("", True),
    ):
        monkeypatch.setenv("OTEL_SDK_DISABLED", value)
        assert recorder_factory().telemetry.enabled is enabled, value


def test_with_the_sdk_disabled_untraced_answers_cannot_be_rated_by_anyone(disabled: Recorder, serve: Serve) -> None:
    """Untraced answers all have the trace id 0…0: it names no answer, so feedback on it is a 404, never a
    rating of whichever answer came last."""
    with serve(disabled) as (_, client):
        kb_id = kb_with_handbook(client)
        reply = client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION}).json()
        rated = client.post("/v1/feedback", json={"trace_id": reply["trace_id"], "rating": "down"})

    assert reply["trace_id"] == "0" * 32
    assert rated.status_code == 404, rated.text
