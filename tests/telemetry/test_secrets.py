"""Telemetry never carries a secret: not the caller's JWT, not the OpenAI API key, not the JWT signing secret.

One server run with successes and failures (refused tokens, provider errors, streamed answers) is searched
whole: every span (names, attributes, events, statuses, resource), every metric label (in memory and as
``/metrics`` serves them), every log line on stdout (at DEBUG) and every OpenTelemetry log record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from service.auth import mint_token
from telemetry.logs import configure_logging
from tests.fake_openai import CHAT, EMBEDDINGS, FakeOpenAI, fake_openai, openai_env
from tests.support import HANDBOOK, assert_problem, create_kb, documents_url, ingest
from tests.telemetry import QUESTION, Recorder, Serve

__all__ = ["fake_openai"]  # the fixture, imported for pytest

API_KEY = "sk-proj-leakcheck-7d41c9e0b2a64f0e8c3d5b1a9f2e6c4d"
JWT_SECRET = "jwt-signing-secret-leakcheck-0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def _token(secret: str = JWT_SECRET, ttl_s: int = 3600) -> str:
    return mint_token(secret, "acme", "alice", ["admin"], ttl_s)


def _span_texts(recorder: Recorder) -> Iterator[str]:
    for span in recorder.spans():
        yield span.name
        yield str(span.status.description)
        yield json.dumps(dict(span.attributes or {}), default=str)
        yield json.dumps(dict(span.resource.attributes), default=str)
        for event in span.events:
            yield event.name
            yield json.dumps(dict(event.attributes or {}), default=str)
        for link in span.links:
            yield json.dumps(dict(link.attributes or {}), default=str)


def _metric_texts(recorder: Recorder) -> Iterator[str]:
    data = recorder.metric_reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                yield metric.name
                for point in metric.data.data_points:
                    yield json.dumps(dict(point.attributes or {}), default=str)


def _log_record_texts(recorder: Recorder) -> Iterator[str]:
    for record in recorder.log_records():
        yield str(record.body)
        yield json.dumps(dict(record.attributes or {}), default=str)


def test_no_token_api_key_or_jwt_secret_reaches_spans_metrics_or_logs(
    recorder: Recorder, serve: Serve, fake_openai: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    valid = _token()
    refused = {
        "forged": _token(secret="another-secret-that-is-long-enough-for-hs256-0123"),
        "expired": _token(ttl_s=-3600),
        "tampered": valid[:-4] + ("AAAA" if not valid.endswith("AAAA") else "BBBB"),
        "appended": valid + ".extra",
    }
    configure_logging(recorder.telemetry, "DEBUG", "json")
    env = openai_env(fake_openai.base_url, OPENAI_API_KEY=API_KEY, RAGWATCH_JWT_SECRET=JWT_SECRET)
    with serve(recorder, **env) as (server, _), server.client({"Authorization": f"Bearer {valid}"}) as client:
        kb_id = create_kb(client, "handbook")
        ingest(client, kb_id, title="Handbook", text=HANDBOOK)
        # Each question differs from the ones before, so that none is answered from the cache.
        answered = client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION})
        streamed = client.post("/v1/chat", json={"kb_id": kb_id, "question": f"{QUESTION} (2)", "stream": True})
        fake_openai.fail_next(status=500, path=CHAT)
        llm_down = client.post("/v1/chat", json={"kb_id": kb_id, "question": f"{QUESTION} (3)"})
        fake_openai.fail_next(status=401, path=EMBEDDINGS)  # the provider refuses our key
        key_refused = client.post("/v1/chat", json={"kb_id": kb_id, "question": f"{QUESTION} (4)"})
        fake_openai.fail_next(status=429, path=CHAT, retry_after="7")
        throttled = client.post("/v1/chat", json={"kb_id": kb_id, "question": f"{QUESTION} (5)", "stream": True})
        fake_openai.fail_next(status=500, path=EMBEDDINGS)
        ingest_failed = client.post(documents_url(kb_id), json={"title": "Again", "text": HANDBOOK})
        refusals = {
            name: client.post(
                "/v1/chat", json={"kb_id": kb_id, "question": QUESTION}, headers={"Authorization": f"Bearer {bad}"}
            )
            for name, bad in refused.items()
        }
        scrape = client.get("/metrics")
        traced = [answered, streamed, llm_down, key_refused, throttled, ingest_failed, *refusals.values()]
        for response in traced:
            recorder.trace_of(response)  # each request has ended, and so has everything it recorded

    assert answered.status_code == 200, answered.text
    assert streamed.status_code == 200, streamed.text
    assert_problem(llm_down, 502, "llm-provider-error", sent=API_KEY)
    assert_problem(key_refused, 502, "llm-provider-error", sent=API_KEY)
    assert_problem(throttled, 503, "llm-provider-rate-limited", sent=API_KEY)
    assert_problem(ingest_failed, 502, "llm-provider-error", sent=API_KEY)
    for name, response in refusals.items():
        assert_problem(response, 401, "unauthenticated", sent=refused[name])
    assert scrape.status_code == 200
    # The run did reach the provider with the key and the server with the tokens: there was something to leak.
    assert all(call.headers["authorization"] == f"Bearer {API_KEY}" for call in fake_openai.requests)
    assert len(fake_openai.calls(CHAT)) == 4

    stdout = capsys.readouterr().out
    assert '"logger":"ragwatch.access"' in stdout
    recorded = {
        "spans": "\n".join(_span_texts(recorder)),
        "metrics (in memory)": "\n".join(_metric_texts(recorder)),
        "metrics (/metrics)": scrape.text,
        "log lines (stdout)": stdout,
        "log records (OpenTelemetry)": "\n".join(_log_record_texts(recorder)),
    }
    assert "rag_llm_calls_total" in recorded["metrics (/metrics)"]
    assert "exception" in recorded["spans"]  # failures were recorded, with their exceptions
    secrets = {
        "OpenAI API key": API_KEY,
        "JWT secret": JWT_SECRET,
        "JWT": valid,
        "JWT signature": valid.rsplit(".", 1)[1],
        **{f"refused JWT ({name})": bad for name, bad in refused.items()},
        **{
            f"refused JWT signature ({name})": refused[name].rsplit(".", 1)[1]
            for name in ("forged", "expired", "tampered")
        },
    }
    leaks = [
        f"{secret_name} in {where}"
        for where, text in recorded.items()
        for secret_name, secret in secrets.items()
        if secret in text
    ]
    assert leaks == []
