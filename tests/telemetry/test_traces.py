"""Every request is one distributed trace: a server span named by its route, and below it the steps that served it.

The app runs for real over HTTP; spans are read from an in-memory exporter added beside the environment's.
The ``openai`` provider talks to the fake OpenAI-compatible server over real HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from service.container import telemetry_options
from tests.fake_openai import CHAT, EMBEDDINGS, FAKE_MODEL, FakeOpenAI, fake_openai, openai_env
from tests.support import HANDBOOK, RedisServer, assert_problem, documents_url, make_settings, token
from tests.telemetry import (
    OTHER_QUESTION,
    QUESTION,
    TRACEPARENT,
    Recorder,
    RecorderFactory,
    Serve,
    attributes,
    hex_span_id,
    hex_trace_id,
    kb_with_handbook,
    sse_events,
)

__all__ = ["fake_openai"]  # the fixture, imported for pytest

CALLER_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN_ID = "b7ad6b7169203331"


LOOKUP_EVERY_TIME = {"RAGWATCH_READ_CONSISTENCY_S": "0"}
"""Settings under which every request looks its knowledge base up in LanceDB (a ``select`` span): with the
default, a lookup is remembered for the read-consistency interval and the next request within it has none."""


def _chat(question: str = QUESTION, **fields: object) -> dict[str, object]:
    return {"question": question, **fields}


# --- one chat request --------------------------------------------------------------------------------------


def test_a_chat_request_is_one_trace_of_authentication_retrieval_and_answer(recorder: Recorder, serve: Serve) -> None:
    with serve(recorder, **LOOKUP_EVERY_TIME) as (_, client):
        kb_id = kb_with_handbook(client)
        first_use = {"Authorization": f"Bearer {token('acme', 'alice', ('admin',), jti='first-use')}"}
        reply = client.post("/v1/chat", json=_chat(kb_id=kb_id), headers=first_use)  # verified: a span of its own

    assert reply.status_code == 200, reply.text
    body = reply.json()
    trace = recorder.trace(body["trace_id"])
    assert trace.is_one_tree()
    assert all(span.status.status_code is StatusCode.UNSET for span in trace.spans)

    server = trace.server
    assert server.name == "POST /v1/chat"
    assert server.parent is None
    server_attributes = attributes(server)
    assert server_attributes["http.route"] == "/v1/chat"
    assert server_attributes["http.request.method"] == "POST"
    assert server_attributes["http.response.status_code"] == 200
    assert server_attributes["rag.tenant.id"] == "acme"
    assert server_attributes["rag.kb.id"] == kb_id
    assert server_attributes["rag.cache.outcome"] == "miss"  # read in the rate limiter's round trip: no span
    assert trace.child_names(server) == [
        "authenticate",
        "rate_limit",
        "select knowledge_bases",
        "rag.retrieve",
        "chat extractive",
    ]
    for child in trace.children(server):
        assert server.start_time is not None
        assert server.end_time is not None
        assert child.start_time is not None
        assert child.end_time is not None
        assert server.start_time <= child.start_time <= child.end_time <= server.end_time

    authenticate = trace.named("authenticate")
    assert authenticate.kind is SpanKind.INTERNAL
    assert attributes(authenticate) == {"rag.auth.method": "jwt", "rag.tenant.id": "acme", "user.id": "alice"}
    rate_limit = trace.named("rate_limit")
    assert attributes(rate_limit) == {"rag.ratelimit.action": "chat", "rag.ratelimit.outcome": "allowed"}

    retrieve = trace.named("rag.retrieve")
    assert attributes(retrieve) == {"rag.top_k": 5, "rag.retrieval.results": len(body["citations"])}
    retrieval_lookup, *searches, fusion = trace.children(retrieve)
    assert attributes(retrieval_lookup) == {"rag.cache.name": "retrieval", "rag.cache.outcome": "miss"}
    assert fusion.name == "rag.fusion"
    # The question is looked up in the embeddings cache and embedded before the searches that need it.
    embedding_lookup, embed_question, *queries = searches
    assert attributes(embedding_lookup) == {"rag.cache.name": "embeddings", "rag.cache.outcome": "miss"}
    assert embed_question.name == "embeddings hashing-384"
    assert sorted(query.name for query in queries) == ["full_text_search chunks", "vector_search chunks"]

    embed = trace.named("embeddings hashing-384")
    assert embed.kind is SpanKind.INTERNAL  # the offline embedder runs in the process
    embed_attributes = attributes(embed)
    assert embed_attributes["gen_ai.operation.name"] == "embeddings"
    assert embed_attributes["gen_ai.provider.name"] == "ragwatch"
    assert embed_attributes["gen_ai.request.model"] == "hashing-384"
    assert embed_attributes["gen_ai.response.model"] == "hashing-384"
    assert embed_attributes["gen_ai.usage.input_tokens"] > 0

    for operation in ("vector_search", "full_text_search"):
        search = trace.named(f"{operation} chunks")
        assert search.kind is SpanKind.CLIENT
        assert attributes(search) == {
            "db.system.name": "lancedb",
            "db.operation.name": operation,
            "db.collection.name": "chunks",
            "rag.top_k": 30,  # three candidates per passage asked for (5), but at least 30, before fusion
            "db.response.returned_rows": 1,  # the handbook is one chunk
        }

    answer = trace.named("chat extractive")
    assert answer.kind is SpanKind.INTERNAL
    assert attributes(answer) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "ragwatch",
        "gen_ai.request.model": "extractive",
        "gen_ai.response.model": body["model"],
        "gen_ai.usage.input_tokens": body["usage"]["input_tokens"],
        "gen_ai.usage.output_tokens": body["usage"]["output_tokens"],
        "gen_ai.response.finish_reasons": ("stop",),
        "rag.answer.outcome": "answered",  # and its quality signals (tests/telemetry/test_quality.py)
        "rag.retrieval.top_score": attributes(answer)["rag.retrieval.top_score"],
        "rag.answer.groundedness": attributes(answer)["rag.answer.groundedness"],
        "rag.answer.citation_coverage": attributes(answer)["rag.answer.citation_coverage"],
    }
    assert trace.children(answer) == []


def test_a_knowledge_base_looked_up_within_the_read_consistency_interval_is_not_looked_up_again(
    recorder: Recorder, serve: Serve
) -> None:
    with serve(recorder, RAGWATCH_READ_CONSISTENCY_S="1", RAGWATCH_CACHE_ANSWERS_ENABLED="false") as (_, client):
        kb_id = kb_with_handbook(client)
        time.sleep(1.1)  # whatever the upload remembered has gone stale
        first = client.post("/v1/chat", json=_chat(kb_id=kb_id))
        second = client.post("/v1/chat", json=_chat(kb_id=kb_id))

    assert first.status_code == second.status_code == 200
    assert "select knowledge_bases" in recorder.trace_of(first).child_names(recorder.trace_of(first).server)
    assert "select knowledge_bases" not in recorder.trace_of(second).child_names(recorder.trace_of(second).server)


def test_a_cached_answer_is_a_trace_of_authentication_and_rate_limit_with_the_hit_and_no_llm_call(
    recorder: Recorder, serve: Serve
) -> None:
    with serve(recorder) as (_, client):
        kb_id = kb_with_handbook(client)
        first = client.post("/v1/chat", json=_chat(kb_id=kb_id))
        again = client.post(
            "/v1/chat", json=_chat("  how MANY days of paid vacation does an employee get? ", kb_id=kb_id)
        )

    assert again.status_code == 200, again.text
    assert again.json()["cached"] is True
    assert again.json()["answer"] == first.json()["answer"]
    trace = recorder.trace(again.json()["trace_id"])
    assert trace.is_one_tree()
    # The answer was read in the rate limiter's round trip: the hit is on the server span, not a span of its own.
    assert trace.child_names(trace.server) == ["rate_limit"]  # the token was verified before: no span
    assert attributes(trace.server)["rag.cache.outcome"] == "hit"
    assert [span.name for span in trace.spans if span.name.startswith(("chat ", "embeddings "))] == []


def test_a_cached_answer_on_redis_is_one_span_per_round_trip_the_rate_limit_reading_the_answer(
    recorder: Recorder, serve: Serve, own_redis: RedisServer
) -> None:
    with serve(recorder, RAGWATCH_REDIS_URL=own_redis.url) as (_, client):
        kb_id = kb_with_handbook(client)
        client.post("/v1/chat", json=_chat(kb_id=kb_id)).raise_for_status()
        again = client.post("/v1/chat", json=_chat(kb_id=kb_id))

    assert again.json()["cached"] is True
    trace = recorder.trace(again.json()["trace_id"])
    assert trace.child_names(trace.server) == ["rate_limit"]  # the token was verified before: no span
    rate_limit = trace.named("rate_limit")
    assert trace.children(rate_limit) == []  # the EVALSHA is this span's own work, not a span of its own
    assert attributes(rate_limit) == {
        "rag.ratelimit.action": "chat",
        "rag.ratelimit.outcome": "allowed",
        "db.system.name": "redis",
        "db.operation.name": "EVALSHA",
    }
    assert attributes(trace.server)["rag.cache.outcome"] == "hit"


def test_a_redis_failure_of_the_rate_limit_is_an_error_on_its_span(
    recorder: Recorder, serve: Serve, own_redis: RedisServer
) -> None:
    with serve(recorder, RAGWATCH_REDIS_URL=own_redis.url) as (_, client):
        kb_id = kb_with_handbook(client)
        own_redis.stop()
        reply = client.post("/v1/chat", json=_chat(kb_id=kb_id))

    assert reply.status_code == 200, reply.text  # the limiter fails open by default
    rate_limit = recorder.trace_of(reply).named("rate_limit")
    assert rate_limit.status.status_code is StatusCode.ERROR
    assert attributes(rate_limit)["rag.ratelimit.outcome"] == "error"
    assert attributes(rate_limit)["error.type"] == "ConnectionError"
    assert [event.name for event in rate_limit.events] == ["exception"]


def test_without_the_rate_limiter_a_cache_lookup_is_a_span_of_its_own(recorder: Recorder, serve: Serve) -> None:
    with serve(recorder, RAGWATCH_RATE_LIMIT_ENABLED="false") as (_, client):
        kb_id = kb_with_handbook(client)
        client.post("/v1/chat", json=_chat(kb_id=kb_id)).raise_for_status()
        again = client.post("/v1/chat", json=_chat(kb_id=kb_id))

    trace = recorder.trace(again.json()["trace_id"])
    assert trace.child_names(trace.server) == ["cache.get"]
    assert attributes(trace.named("cache.get")) == {"rag.cache.name": "answers", "rag.cache.outcome": "hit"}


def test_the_trace_id_of_the_answer_is_the_one_of_its_traceresponse_header(recorder: Recorder, serve: Serve) -> None:
    with serve(recorder) as (_, client):
        kb_id = kb_with_handbook(client)
        reply = client.post("/v1/chat", json=_chat(kb_id=kb_id))

    match = TRACEPARENT.fullmatch(reply.headers["traceresponse"])
    assert match is not None
    trace = recorder.trace(match["trace_id"])
    assert reply.json()["trace_id"] == match["trace_id"]
    assert match["span_id"] == hex_span_id(trace.server)  # the caller learns which span served it
    assert int(match["flags"], 16) & 0x01  # sampled


def test_server_spans_are_named_by_route_template_never_by_the_raw_path(recorder: Recorder, serve: Serve) -> None:
    with serve(recorder) as (_, client):
        kb_id = kb_with_handbook(client)
        detail = client.get(f"/v1/knowledge-bases/{kb_id}")
        document = client.get(f"{documents_url(kb_id)}/handbook")
        missing = client.get("/v1/knowledge-bases/kb_0000000000000000000")

    assert detail.status_code == 200, detail.text
    assert document.status_code == 200, document.text
    assert_problem(missing, 404, "not-found")
    for response, template in (
        (detail, "/v1/knowledge-bases/{kb_id}"),
        (document, "/v1/knowledge-bases/{kb_id}/documents/{document_id}"),
        (missing, "/v1/knowledge-bases/{kb_id}"),
    ):
        server = recorder.trace_of(response).server
        assert server.name == f"GET {template}"
        assert attributes(server)["http.route"] == template
        assert attributes(server)["rag.tenant.id"] == "acme"
    assert attributes(recorder.trace_of(detail).server)["rag.kb.id"] == kb_id
    assert attributes(recorder.trace_of(document).server)["rag.kb.id"] == kb_id
    # An id that names no knowledge base of the tenant is not recorded as one.
    assert "rag.kb.id" not in attributes(recorder.trace_of(missing).server)
    names = " ".join(span.name for span in recorder.spans())
    assert kb_id not in names
    assert "kb_0000000000000000000" not in names
    assert "handbook" not in names


# --- streaming ---------------------------------------------------------------------------------------------


def test_a_streamed_answer_is_a_chat_span_below_the_server_span_and_times_its_first_token(
    recorder: Recorder, serve: Serve
) -> None:
    with serve(recorder) as (_, client):
        kb_id = kb_with_handbook(client)
        whole = client.post("/v1/chat", json=_chat(kb_id=kb_id))
        # A whole answer's first token arrives with the answer: recorded too, so the series exists either way.
        whole_count, whole_s = recorder.histogram("rag.llm.time_to_first_token")
        assert whole_count == 1
        streamed = client.post("/v1/chat", json=_chat(OTHER_QUESTION, kb_id=kb_id, stream=True))

    assert whole.status_code == 200, whole.text
    assert streamed.status_code == 200, streamed.text
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_events(streamed.text)
    assert [name for name, _ in events[:-1]] == ["delta"] * (len(events) - 1)
    name, data = events[-1]
    assert name == "done"
    done = json.loads(data)
    trace = recorder.trace(done["trace_id"])
    assert trace.is_one_tree()
    assert TRACEPARENT.fullmatch(streamed.headers["traceresponse"])["trace_id"] == done["trace_id"]  # type: ignore[index]

    assert trace.server.name == "POST /v1/chat"
    answer = trace.named("chat extractive")
    assert trace.parent_of(answer) is trace.server
    assert attributes(answer)["gen_ai.usage.input_tokens"] == done["usage"]["input_tokens"]
    assert attributes(answer)["gen_ai.usage.output_tokens"] == done["usage"]["output_tokens"]
    assert attributes(answer)["gen_ai.response.model"] == done["model"]
    assert attributes(answer)["gen_ai.response.finish_reasons"] == ("stop",)
    assert answer.status.status_code is StatusCode.UNSET

    count, total_s = recorder.histogram(
        "rag.llm.time_to_first_token", **{"gen_ai.provider.name": "ragwatch", "gen_ai.request.model": "extractive"}
    )
    assert count == 2
    assert answer.start_time is not None
    assert answer.end_time is not None
    first_token_s = total_s - whole_s
    assert 0 < first_token_s <= (answer.end_time - answer.start_time) / 1e9 + 0.0005  # another clock: a little slack


def test_a_streamed_openai_answer_holds_its_upstream_http_call_inside_the_chat_span(
    recorder: Recorder, serve: Serve, fake_openai: FakeOpenAI
) -> None:
    with serve(recorder, **openai_env(fake_openai.base_url, RAGWATCH_EMBEDDER="hashing")) as (_, client):
        kb_id = kb_with_handbook(client)
        streamed = client.post("/v1/chat", json=_chat(kb_id=kb_id, stream=True))

    assert streamed.status_code == 200, streamed.text
    done = json.loads(sse_events(streamed.text)[-1][1])
    trace = recorder.trace(done["trace_id"])
    assert trace.is_one_tree()
    answer = trace.named("chat gpt-4o-mini")
    assert answer.kind is SpanKind.CLIENT
    assert trace.parent_of(answer) is trace.server
    assert attributes(answer)["gen_ai.provider.name"] == "openai"
    assert attributes(answer)["gen_ai.response.model"] == FAKE_MODEL
    assert attributes(answer)["gen_ai.usage.input_tokens"] == fake_openai.prompt_tokens
    assert attributes(answer)["gen_ai.usage.output_tokens"] == fake_openai.completion_tokens
    [upstream] = trace.children(answer)
    assert upstream.kind is SpanKind.CLIENT
    assert attributes(upstream)["url.full"] == fake_openai.url + CHAT
    assert recorder.histogram("rag.llm.time_to_first_token", **{"gen_ai.request.model": "gpt-4o-mini"})[0] == 1


# --- failures ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_an_llm_provider_error_is_an_error_chat_span_a_502_server_span_and_a_counted_failure(
    recorder: Recorder, serve: Serve, fake_openai: FakeOpenAI, stream: bool
) -> None:
    env = openai_env(fake_openai.base_url, RAGWATCH_EMBEDDER="hashing", RAGWATCH_LLM_MAX_RETRIES="0")
    with serve(recorder, **env, **LOOKUP_EVERY_TIME) as (_, client):
        kb_id = kb_with_handbook(client)
        fake_openai.fail_next(status=500, path=CHAT)
        reply = client.post("/v1/chat", json=_chat(kb_id=kb_id, stream=stream))

    assert_problem(reply, 502, "llm-provider-error")
    trace = recorder.trace_of(reply)
    assert trace.is_one_tree()

    server = trace.server
    assert server.name == "POST /v1/chat"
    assert server.status.status_code is StatusCode.ERROR  # a 5xx is the server's failure
    assert attributes(server)["http.response.status_code"] == 502
    assert attributes(server)["error.type"] == "502"
    assert trace.child_names(server) == ["rate_limit", "select knowledge_bases", "rag.retrieve", "chat gpt-4o-mini"]
    assert trace.named("rag.retrieve").status.status_code is StatusCode.UNSET  # retrieval itself went fine

    answer = trace.named("chat gpt-4o-mini")
    assert answer.kind is SpanKind.CLIENT
    assert answer.status.status_code is StatusCode.ERROR
    assert answer.status.description == "The LLM provider answered 500."
    answer_attributes = attributes(answer)
    assert answer_attributes["error.type"] == "llm-provider-error"
    assert answer_attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert "gen_ai.response.model" not in answer_attributes
    assert "gen_ai.usage.output_tokens" not in answer_attributes
    [exception] = [event for event in answer.events if event.name == "exception"]
    assert dict(exception.attributes or {})["exception.type"] == "service.errors.ProviderError"
    [upstream] = trace.children(answer)
    assert upstream.kind is SpanKind.CLIENT
    assert attributes(upstream)["http.response.status_code"] == 500
    assert upstream.status.status_code is StatusCode.ERROR

    labels = {"provider": "openai", "model": "gpt-4o-mini"}
    assert recorder.counter("rag_llm_calls", status="llm-provider-error", **labels) == 1
    assert recorder.counter("rag_llm_calls", status="ok", **labels) == 0
    assert recorder.counter("rag_requests", method="POST", endpoint="/v1/chat", status="502") == 1


def test_a_stream_the_provider_cuts_off_is_a_200_whose_chat_span_is_in_error(
    recorder: Recorder, serve: Serve, fake_openai: FakeOpenAI
) -> None:
    """The status line was sent with the first event, so the failure lives in the trace, the error event and the
    LLM call count, not in the HTTP status."""
    with serve(recorder, **openai_env(fake_openai.base_url, RAGWATCH_EMBEDDER="hashing")) as (_, client):
        kb_id = kb_with_handbook(client)
        fake_openai.cut_after_chunks = 3
        streamed = client.post("/v1/chat", json=_chat(kb_id=kb_id, stream=True))

    assert streamed.status_code == 200
    events = sse_events(streamed.text)
    assert events[0][0] == "delta"
    assert events[-1][0] == "error"
    problem = json.loads(events[-1][1])
    trace = recorder.trace_of(streamed)
    assert trace.is_one_tree()
    assert trace.server.status.status_code is StatusCode.UNSET
    assert attributes(trace.server)["http.response.status_code"] == 200
    answer = trace.named("chat gpt-4o-mini")
    assert trace.parent_of(answer) is trace.server
    assert answer.status.status_code is StatusCode.ERROR
    slug = problem["type"].rsplit("/", 1)[1]
    assert attributes(answer)["error.type"] == slug
    assert [event.name for event in answer.events] == ["exception"]
    assert recorder.counter("rag_llm_calls", provider="openai", model="gpt-4o-mini", status=slug) == 1
    assert recorder.counter("rag_llm_calls", status="ok") == 0
    # It began streaming: its first token was timed.
    assert recorder.histogram("rag.llm.time_to_first_token", **{"gen_ai.request.model": "gpt-4o-mini"})[0] == 1


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(f"Bearer {token()}x", id="bad-signature"),
        pytest.param("Bearer not-a-jwt", id="malformed"),
        pytest.param("", id="missing"),
    ],
)
def test_a_refused_token_is_still_one_trace_with_the_authenticate_span_in_error(
    recorder: Recorder, serve: Serve, authorization: str
) -> None:
    with serve(recorder) as (server, _), server.client({"Authorization": authorization}) as stranger:
        reply = stranger.post("/v1/chat", json=_chat(kb_id="kb_whatever"))

    assert_problem(reply, 401, "unauthenticated")
    trace = recorder.trace_of(reply)  # the refusal carries a traceresponse header too
    assert trace.is_one_tree()
    server_span = trace.server
    assert server_span.name == "POST /v1/chat"
    assert attributes(server_span)["http.response.status_code"] == 401
    assert server_span.status.status_code is StatusCode.UNSET  # a 4xx is the caller's failure, not the server's
    assert "rag.tenant.id" not in attributes(server_span)
    assert trace.child_names(server_span) == ["authenticate"]  # nothing past the guard ran

    authenticate = trace.named("authenticate")
    assert authenticate.status.status_code is StatusCode.ERROR
    assert attributes(authenticate) == {"rag.auth.method": "jwt", "error.type": "unauthenticated"}
    [exception] = [event for event in authenticate.events if event.name == "exception"]
    assert dict(exception.attributes or {})["exception.type"] == "service.errors.Unauthorized"
    sent = authorization.removeprefix("Bearer ")
    if sent:
        assert all(sent not in str(value) for value in attributes(authenticate).values())
        assert all(sent not in str(value) for value in dict(exception.attributes or {}).values())

    assert recorder.counter("rag_requests", method="POST", endpoint="/v1/chat", status="401") == 1
    assert recorder.counter("rag_requests", status="200") == 0


# --- ingestion ---------------------------------------------------------------------------------------------


def test_ingesting_a_document_traces_parsing_chunking_embedding_and_writing(recorder: Recorder, serve: Serve) -> None:
    with serve(recorder, RAGWATCH_CHUNK_SIZE="200", RAGWATCH_CHUNK_OVERLAP="0", **LOOKUP_EVERY_TIME) as (_, client):
        kb_id = kb_with_handbook(client)
        recorder.span_exporter.clear()
        created = client.post(documents_url(kb_id), json={"title": "Handbook", "text": HANDBOOK, "id": "handbook"})

    assert created.status_code == 201, created.text
    chunks = created.json()["chunks"]
    assert chunks > 1
    trace = recorder.trace_of(created)
    assert trace.is_one_tree()
    assert all(span.status.status_code is StatusCode.UNSET for span in trace.spans)
    server = trace.server
    assert server.name == "POST /v1/knowledge-bases/{kb_id}/documents"
    assert attributes(server)["rag.kb.id"] == kb_id
    assert trace.child_names(server) == [
        "rate_limit",
        "ingest.parse",
        "select knowledge_bases",
        "ingest.chunk",
        "ingest.embed",
        "ingest.write",
    ]
    assert attributes(trace.named("ingest.chunk")) == {"rag.chunks": chunks}
    assert attributes(trace.named("ingest.embed")) == {"rag.chunks": chunks}

    [embed] = trace.children(trace.named("ingest.embed"))
    assert embed.name == "embeddings hashing-384"
    assert attributes(embed)["gen_ai.operation.name"] == "embeddings"
    assert attributes(embed)["gen_ai.usage.input_tokens"] > 0

    [write] = trace.children(trace.named("ingest.write"))
    assert write.name == "merge_insert chunks"
    assert write.kind is SpanKind.CLIENT
    assert attributes(write) == {
        "db.system.name": "lancedb",
        "db.operation.name": "merge_insert",
        "db.collection.name": "chunks",
        "db.response.returned_rows": chunks,
    }


# --- context propagation -----------------------------------------------------------------------------------


def test_a_callers_trace_context_is_continued_and_passed_on_to_the_llm_provider(
    recorder: Recorder, serve: Serve, fake_openai: FakeOpenAI
) -> None:
    with serve(recorder, **openai_env(fake_openai.base_url)) as (_, client):
        kb_id = kb_with_handbook(client)
        reply = client.post(
            "/v1/chat",
            json=_chat(kb_id=kb_id),
            headers={
                "traceparent": f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01",
                "tracestate": "vendor=opaque",
                "baggage": "session.id=s-42",
            },
        )

    assert reply.status_code == 200, reply.text
    assert reply.json()["trace_id"] == CALLER_TRACE_ID
    trace = recorder.trace(CALLER_TRACE_ID)
    assert trace.is_one_tree()
    server = trace.server
    assert server.parent is not None
    assert server.parent.is_remote
    assert format(server.parent.span_id, "016x") == CALLER_SPAN_ID
    assert dict(server.parent.trace_state) == {"vendor": "opaque"}
    assert reply.headers["traceresponse"] == f"00-{CALLER_TRACE_ID}-{hex_span_id(server)}-01"

    # Both calls of the question to the provider carry the trace on: embedding it, then answering it.
    question_embedding, chat = fake_openai.calls(EMBEDDINGS)[-1], fake_openai.calls(CHAT)[-1]
    for call, genai_span in (
        (question_embedding, trace.named("embeddings text-embedding-3-small")),
        (chat, trace.named("chat gpt-4o-mini")),
    ):
        outbound = TRACEPARENT.fullmatch(call.headers["traceparent"])
        assert outbound is not None
        assert outbound["trace_id"] == CALLER_TRACE_ID
        [http_span] = trace.children(genai_span)
        assert http_span.kind is SpanKind.CLIENT
        assert outbound["span_id"] == hex_span_id(http_span)  # the provider's parent is our HTTP client span
        assert call.headers["tracestate"] == "vendor=opaque"


def test_a_caller_that_does_not_sample_its_trace_is_followed(recorder: Recorder, serve: Serve) -> None:
    with serve(recorder) as (_, client):
        kb_id = kb_with_handbook(client)
        recorder.span_exporter.clear()
        reply = client.post(
            "/v1/chat", json=_chat(kb_id=kb_id), headers={"traceparent": f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-00"}
        )
        sampled = client.get(f"/v1/knowledge-bases/{kb_id}")
        recorder.trace_of(sampled)  # a later, sampled request has ended: the unsampled one has too

    assert reply.status_code == 200, reply.text
    assert reply.json()["trace_id"] == CALLER_TRACE_ID  # still the caller's trace, for its logs
    match = TRACEPARENT.fullmatch(reply.headers["traceresponse"])
    assert match is not None
    assert match["trace_id"] == CALLER_TRACE_ID
    assert match["flags"] == "00"
    assert [span for span in recorder.spans() if hex_trace_id(span) == CALLER_TRACE_ID] == []


# --- HTTP semantic conventions -----------------------------------------------------------------------------

_FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from telemetry import TelemetryOptions, setup_telemetry
    from tests.fake_openai import openai_env, running_fake_openai
    from tests.support import auth, live_server, make_settings

    spans = InMemorySpanExporter()
    telemetry = setup_telemetry(TelemetryOptions("test", extra_span_processors=[SimpleSpanProcessor(spans)]))
    with running_fake_openai() as fake:
        settings = make_settings(Path(sys.argv[1]), **openai_env(fake.base_url))
        with live_server(settings, telemetry=telemetry) as server, server.client(auth()) as client:
            client.get("/v1/knowledge-bases").raise_for_status()
    [server_span] = [span for span in spans.get_finished_spans() if span.kind.name == "SERVER"]
    print(json.dumps(sorted(server_span.attributes or {})))
    telemetry.shutdown()
    """
)


def test_server_spans_follow_the_stable_http_conventions_when_the_llm_client_is_instrumented_first(
    tmp_path: Path,
) -> None:
    """The first process to build the app with the ``openai`` provider instruments its HTTP client before the server:
    the stable HTTP conventions must be chosen by then, or the whole process reports the old ones."""
    root = Path(__file__).resolve().parents[2]
    completed = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, str(tmp_path)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(root)},  # without OTEL_* (the autouse fixture)
    )

    assert completed.returncode == 0, completed.stderr
    keys = set(json.loads(completed.stdout.strip().splitlines()[-1]))
    assert {"http.request.method", "http.response.status_code", "http.route", "url.path"} <= keys
    assert not keys & {"http.method", "http.status_code", "http.target", "http.url"}


# --- content capture ---------------------------------------------------------------------------------------


def _span_texts(recorder: Recorder) -> str:
    """Everything the spans recorded as text: names, attributes, event attributes and status descriptions."""
    parts: list[str] = []
    for span in recorder.spans():
        parts += [span.name, str(span.status.description), json.dumps(attributes(span), default=str)]
        parts += [json.dumps(dict(event.attributes or {}), default=str) for event in span.events]
    return "\n".join(parts)


@pytest.mark.parametrize("llm", ["offline", "openai"])
def test_question_and_answer_text_stay_off_every_span_by_default(
    recorder: Recorder, serve: Serve, fake_openai: FakeOpenAI, llm: str
) -> None:
    env = openai_env(fake_openai.base_url, RAGWATCH_EMBEDDER="hashing") if llm == "openai" else {}
    with serve(recorder, **env) as (_, client):
        kb_id = kb_with_handbook(client)
        whole = client.post("/v1/chat", json=_chat(kb_id=kb_id))
        streamed = client.post("/v1/chat", json=_chat(kb_id=kb_id, stream=True))
        recorder.trace(whole.json()["trace_id"])
        recorder.trace_of(streamed)

    answer = whole.json()["answer"]
    assert answer
    recorded = _span_texts(recorder)
    assert "gen_ai.input.messages" not in recorded
    assert "gen_ai.output.messages" not in recorded
    assert QUESTION not in recorded
    assert answer not in recorded
    assert "twenty-five days" not in recorded  # nor the retrieved passages the answer was drawn from


def test_capture_content_puts_question_and_answer_on_the_chat_span_only(
    recorder_factory: RecorderFactory, serve: Serve, tmp_path: Path
) -> None:
    options = telemetry_options(make_settings(tmp_path, RAGWATCH_CAPTURE_CONTENT="true"))
    assert options.capture_content
    recorder = recorder_factory(capture_content=options.capture_content)
    with serve(recorder) as (_, client):
        kb_id = kb_with_handbook(client)
        whole = client.post("/v1/chat", json=_chat(kb_id=kb_id))
        streamed = client.post("/v1/chat", json=_chat(OTHER_QUESTION, kb_id=kb_id, stream=True))

    streamed_text = "".join(json.loads(data)["text"] for name, data in sse_events(streamed.text) if name == "delta")
    done = json.loads(sse_events(streamed.text)[-1][1])
    for trace, question, answer in (
        (recorder.trace(whole.json()["trace_id"]), QUESTION, whole.json()["answer"]),
        (recorder.trace(done["trace_id"]), OTHER_QUESTION, streamed_text),
    ):
        chat = trace.named("chat extractive")
        assert json.loads(attributes(chat)["gen_ai.input.messages"]) == [{"role": "user", "content": question}]
        assert json.loads(attributes(chat)["gen_ai.output.messages"]) == [{"role": "assistant", "content": answer}]
        others = [span for span in trace.spans if span is not chat]
        assert all(QUESTION not in json.dumps(attributes(span), default=str) for span in others)


def test_a_rate_limited_request_is_one_trace_that_stops_at_the_refused_rate_limit_decision(
    recorder: Recorder, serve: Serve
) -> None:
    with serve(recorder, RAGWATCH_RATE_LIMIT_PER_MINUTE="1") as (_, client):
        kb_id = kb_with_handbook(client)
        assert client.post("/v1/chat", json=_chat(kb_id=kb_id)).status_code == 200
        refused = client.post("/v1/chat", json=_chat(kb_id=kb_id))

    assert_problem(refused, 429, "rate-limited")
    trace = recorder.trace_of(refused)
    assert trace.is_one_tree()
    assert attributes(trace.server)["http.response.status_code"] == 429
    assert trace.child_names(trace.server) == ["rate_limit"]  # no retrieval, no LLM call
    rate_limit = trace.named("rate_limit")
    assert attributes(rate_limit) == {"rag.ratelimit.action": "chat", "rag.ratelimit.outcome": "refused"}
    assert recorder.counter("rag.ratelimit.decisions", action="chat", outcome="refused") == 1
    assert recorder.counter("rag_requests", endpoint="/v1/chat", status="429") == 1


# --- conversations -------------------------------------------------------------------------------------------


def test_a_conversation_turn_carries_its_id_on_the_server_span_and_on_the_rewrite_and_answer_chat_spans(
    recorder: Recorder, serve: Serve, fake_openai: FakeOpenAI
) -> None:
    env = openai_env(fake_openai.base_url, RAGWATCH_EMBEDDER="hashing")
    with serve(recorder, **env) as (_, client):
        kb_id = kb_with_handbook(client)
        client.post("/v1/chat", json=_chat(kb_id=kb_id, conversation_id="talk-1")).raise_for_status()
        follow_up = client.post("/v1/chat", json=_chat(OTHER_QUESTION, kb_id=kb_id, conversation_id="talk-1"))

    assert follow_up.status_code == 200, follow_up.text
    trace = recorder.trace(follow_up.json()["trace_id"])
    assert trace.is_one_tree()
    assert attributes(trace.server)["gen_ai.conversation.id"] == "talk-1"
    chats = [span for span in trace.spans if span.name == "chat gpt-4o-mini"]
    steps = {attributes(span).get("rag.llm.step", "answer"): span for span in chats}
    assert set(steps) == {"rewrite", "answer"}
    assert all(attributes(span)["gen_ai.conversation.id"] == "talk-1" for span in chats)
    assert attributes(steps["rewrite"])["gen_ai.request.temperature"] == 0.0
    assert attributes(steps["rewrite"])["gen_ai.usage.output_tokens"] == fake_openai.completion_tokens
    assert (steps["rewrite"].end_time or 0) <= (steps["answer"].start_time or 0)
    duration = "gen_ai.client.operation.duration"
    assert recorder.histogram(duration, **{"gen_ai.request.model": "gpt-4o-mini"})[0] == 3  # 2 answers, 1 rewrite
    assert recorder.histogram(duration, **{"gen_ai.conversation.id": "talk-1"})[0] == 0  # never a metric label


def test_the_answer_span_carries_the_max_tokens_and_temperature_really_sent(
    recorder: Recorder, serve: Serve, fake_openai: FakeOpenAI
) -> None:
    env = openai_env(fake_openai.base_url, RAGWATCH_EMBEDDER="hashing", RAGWATCH_LLM_MAX_OUTPUT_TOKENS="300")
    question = [{"role": "user", "content": QUESTION}]
    with serve(recorder, **env) as (_, client):
        kb_id = kb_with_handbook(client)
        plain = client.post("/v1/chat/completions", json={"model": kb_id, "messages": question})
        asked = client.post(
            "/v1/chat/completions", json={"model": kb_id, "messages": question, "max_tokens": 9000, "temperature": 0.4}
        )

    spans = {}
    for name, response in (("plain", plain), ("asked", asked)):
        assert response.status_code == 200, response.text
        spans[name] = attributes(recorder.trace(response.json()["trace_id"]).named("chat gpt-4o-mini"))
    assert spans["plain"]["gen_ai.request.max_tokens"] == 300
    assert "gen_ai.request.temperature" not in spans["plain"]
    assert spans["asked"]["gen_ai.request.max_tokens"] == 300  # capped by RAGWATCH_LLM_MAX_OUTPUT_TOKENS
    assert spans["asked"]["gen_ai.request.temperature"] == 0.4
    assert [call.body["max_tokens"] for call in fake_openai.calls(CHAT)] == [300, 300]
    assert spans["plain"]["gen_ai.response.id"] == "chatcmpl-fake"  # the provider's id of the completion
    scores = [
        record.attributes
        for record in recorder.log_records()
        if record.event_name == "gen_ai.evaluation.result"
        and format(record.trace_id or 0, "032x") == plain.json()["trace_id"]
    ]
    assert scores
    assert all(attributes_of["gen_ai.response.id"] == "chatcmpl-fake" for attributes_of in scores if attributes_of)


def test_a_token_is_verified_in_an_authenticate_span_once_then_recognised_without_one(
    recorder: Recorder, serve: Serve
) -> None:
    fresh = {"Authorization": f"Bearer {token('acme', 'alice', ('admin',), jti='fresh')}"}
    with serve(recorder) as (_, client):
        first = client.get("/v1/knowledge-bases", headers=fresh)
        second = client.get("/v1/knowledge-bases", headers=fresh)

    assert recorder.trace_of(first).child_names(recorder.trace_of(first).server) == ["authenticate"]
    assert recorder.trace_of(second).child_names(recorder.trace_of(second).server) == []  # a lookup in memory
    assert attributes(recorder.trace_of(second).server)["rag.tenant.id"] == "acme"
