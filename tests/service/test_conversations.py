"""Conversations over HTTP: ``/v1/chat`` with a ``conversation_id`` keeps its turns for that user alone, reads a
follow-up in the earlier questions, and ``GET``/``DELETE /v1/conversations/{id}`` serve and forget them; the
turns are bounded, expire, and live in Redis when one is configured."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ClientFactory
from tests.fake_openai import CHAT, EMBEDDINGS, FakeOpenAI, fake_openai, is_rewrite, openai_env
from tests.support import (
    RedisServer,
    assert_problem,
    auth,
    create_kb,
    fresh_tenant,
    ingest,
    live_server,
    make_settings,
    two_replicas,
)

__all__ = ["fake_openai"]  # the fixture, imported for pytest

UNESCO = (
    "UNESCO promotes education, science and culture among nations. "
    "Its secretariat sits in Paris, at the Place de Fontenoy."
)
WMO = (
    "The World Meteorological Organization (WMO) coordinates weather services worldwide. "
    "Its secretariat sits in Geneva, on the Avenue de la Paix."
)
FOLLOW_UP = "Where does its secretariat sit?"


def chat(client: httpx.Client, kb_id: str, question: str, conversation_id: str | None, **extra: Any) -> dict[str, Any]:
    body = {"kb_id": kb_id, "question": question, **extra}
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    response = client.post("/v1/chat", json=body)
    assert response.status_code == 200, response.text
    reply: dict[str, Any] = response.json()
    return reply


@pytest.fixture
def organisations(admin: httpx.Client) -> str:
    kb_id = create_kb(admin, "organisations")
    ingest(admin, kb_id, title="UNESCO", text=UNESCO)
    ingest(admin, kb_id, title="WMO", text=WMO)
    return kb_id


@pytest.mark.parametrize(("first", "title", "place"), [("What does UNESCO do?", "UNESCO", "Paris"),
                                                         ("What does the WMO do?", "WMO", "Geneva")])  # fmt: skip
def test_a_follow_up_is_answered_in_the_conversations_earlier_question(
    admin: httpx.Client, organisations: str, first: str, title: str, place: str
) -> None:
    conversation = f"talk-{title.lower()}-{time.monotonic_ns()}"
    chat(admin, organisations, first, conversation)

    reply = chat(admin, organisations, FOLLOW_UP, conversation, top_k=1)

    assert [citation["title"] for citation in reply["citations"]] == [title]
    assert place in reply["answer"]
    assert reply["conversation_id"] == conversation


def test_the_turns_are_served_oldest_first_with_answers_citations_and_trace_ids(
    admin: httpx.Client, organisations: str
) -> None:
    first = chat(admin, organisations, "What does UNESCO do?", "served")
    second = chat(admin, organisations, FOLLOW_UP, "served")

    response = admin.get("/v1/conversations/served")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "served"
    assert [turn["question"] for turn in body["turns"]] == ["What does UNESCO do?", FOLLOW_UP]
    assert [turn["answer"] for turn in body["turns"]] == [first["answer"], second["answer"]]
    assert [turn["trace_id"] for turn in body["turns"]] == [first["trace_id"], second["trace_id"]]
    assert body["turns"][1]["citations"] == second["citations"]
    assert all(turn["created_at"] for turn in body["turns"])


def test_a_chat_without_conversation_keeps_nothing(admin: httpx.Client, organisations: str) -> None:
    reply = chat(admin, organisations, "What does UNESCO do?", None)

    assert reply["conversation_id"] is None


def test_a_streamed_answer_is_kept_as_a_turn_and_its_done_event_names_the_conversation(
    admin: httpx.Client, organisations: str
) -> None:
    body = {"kb_id": organisations, "question": "What does UNESCO do?", "stream": True, "conversation_id": "streamed"}
    with admin.stream("POST", "/v1/chat", json=body) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    done = json.loads(lines[-1].removeprefix("data:"))

    turns = admin.get("/v1/conversations/streamed").json()["turns"]

    assert done["conversation_id"] == "streamed"
    assert [(turn["question"], turn["trace_id"]) for turn in turns] == [("What does UNESCO do?", done["trace_id"])]


def test_a_conversation_is_the_callers_alone(client_for: ClientFactory, organisations: str) -> None:
    alice = client_for("acme", "alice", ("admin",))
    chat(alice, organisations, "What does UNESCO do?", "private")

    bob = client_for("acme", "bob", ("member",))
    mallory = client_for(fresh_tenant(), "alice", ("admin",))

    for other in (bob, mallory):
        assert_problem(other.get("/v1/conversations/private"), 404, "not-found")
        assert_problem(other.delete("/v1/conversations/private"), 404, "not-found")
    assert len(alice.get("/v1/conversations/private").json()["turns"]) == 1


def test_a_deleted_conversation_is_gone_and_its_next_turn_starts_afresh(
    admin: httpx.Client, organisations: str
) -> None:
    chat(admin, organisations, "What does UNESCO do?", "forgotten")

    deleted = admin.delete("/v1/conversations/forgotten")
    after = admin.get("/v1/conversations/forgotten")
    reply = chat(admin, organisations, FOLLOW_UP, "forgotten")

    assert deleted.status_code == 204
    assert_problem(after, 404, "not-found")
    assert_problem(admin.delete("/v1/conversations/forgotten-never"), 404, "not-found")
    assert [t["question"] for t in admin.get("/v1/conversations/forgotten").json()["turns"]] == [FOLLOW_UP]
    assert reply["conversation_id"] == "forgotten"


@pytest.mark.parametrize("conversation_id", ["", "has space", "x" * 65, "../etc", 42])
def test_a_malformed_conversation_id_is_a_400_and_nothing_is_kept(
    admin: httpx.Client, organisations: str, conversation_id: object
) -> None:
    response = admin.post(
        "/v1/chat", json={"kb_id": organisations, "question": "What?", "conversation_id": conversation_id}
    )

    assert_problem(response, 400, "invalid-request")


@pytest.fixture(params=["memory", "redis"])
def shared_state(request: pytest.FixtureRequest, redis_server: RedisServer) -> str:
    """``RAGWATCH_REDIS_URL``: the in-process default, then a real Redis."""
    return "memory://" if request.param == "memory" else redis_server.url


@pytest.fixture
def short_lived(tmp_path: Path, shared_state: str) -> Iterator[httpx.Client]:
    """A server whose conversations keep 2 turns for 2 seconds."""
    settings = make_settings(
        tmp_path,
        RAGWATCH_REDIS_URL=shared_state,
        RAGWATCH_CONVERSATION_MAX_TURNS="2",
        RAGWATCH_CONVERSATION_TTL_S="2",
    )
    with live_server(settings) as server, server.client(auth(fresh_tenant())) as client:
        yield client


def test_a_conversation_keeps_its_last_turns_and_expires_after_its_last_one(short_lived: httpx.Client) -> None:
    kb_id = create_kb(short_lived, "bounded")
    ingest(short_lived, kb_id, title="UNESCO", text=UNESCO)
    questions = ["What does UNESCO do?", FOLLOW_UP, "Where is the Place de Fontenoy?"]
    for question in questions:
        chat(short_lived, kb_id, question, "bounded")

    kept = short_lived.get("/v1/conversations/bounded").json()["turns"]
    time.sleep(2.5)
    expired = short_lived.get("/v1/conversations/bounded")

    assert [turn["question"] for turn in kept] == questions[1:]
    assert_problem(expired, 404, "not-found")


def test_each_turn_renews_the_conversations_lifetime(short_lived: httpx.Client) -> None:
    kb_id = create_kb(short_lived, "renewed")
    ingest(short_lived, kb_id, title="UNESCO", text=UNESCO)
    chat(short_lived, kb_id, "What does UNESCO do?", "renewed")
    time.sleep(1.3)
    chat(short_lived, kb_id, FOLLOW_UP, "renewed")
    time.sleep(1.3)  # 2.6 s after the first turn, 1.3 s after the last: within the 2 s lifetime of the last

    kept = short_lived.get("/v1/conversations/renewed")

    assert kept.status_code == 200, kept.text
    assert [turn["question"] for turn in kept.json()["turns"]] == ["What does UNESCO do?", FOLLOW_UP]


def test_with_redis_every_replica_serves_the_same_conversation(tmp_path: Path, redis_server: RedisServer) -> None:
    with two_replicas(tmp_path, redis_server.url, "replicas") as (one, other):
        kb_id = create_kb(one, "organisations")
        ingest(one, kb_id, title="UNESCO", text=UNESCO)
        ingest(one, kb_id, title="WMO", text=WMO)
        chat(one, kb_id, "What does the WMO do?", "across")
        reply = chat(other, kb_id, FOLLOW_UP, "across", top_k=1)
        turns = other.get("/v1/conversations/across").json()["turns"]

    assert [citation["title"] for citation in reply["citations"]] == ["WMO"]
    assert [turn["question"] for turn in turns] == ["What does the WMO do?", FOLLOW_UP]


def test_while_redis_is_down_a_chat_is_answered_alone_and_conversations_are_a_503(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    with (
        live_server(make_settings(tmp_path, RAGWATCH_REDIS_URL=own_redis.url)) as server,
        server.client(auth("outage")) as client,
    ):
        kb_id = create_kb(client, "organisations")
        ingest(client, kb_id, title="UNESCO", text=UNESCO)
        chat(client, kb_id, "What does UNESCO do?", "outage")
        own_redis.stop()

        reply = client.post("/v1/chat", json={"kb_id": kb_id, "question": FOLLOW_UP, "conversation_id": "outage"})
        read = client.get("/v1/conversations/outage")

    assert reply.status_code == 200, reply.text
    assert reply.json()["conversation_id"] == "outage"
    assert_problem(read, 503, "shared-state-unavailable")
    assert read.headers["Retry-After"] == "1"


def test_with_an_llm_a_follow_up_is_rewritten_standalone_and_that_question_is_retrieved_and_answered(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    fake_openai.standalone = "Where does the UNESCO secretariat sit?"
    with (
        live_server(make_settings(tmp_path, **openai_env(fake_openai.base_url))) as server,
        server.client(auth()) as client,
    ):
        kb_id = create_kb(client, "organisations")
        ingest(client, kb_id, title="UNESCO", text=UNESCO)
        chat(client, kb_id, "What does UNESCO do?", "rewritten")
        calls_before = len(fake_openai.requests)
        chat(client, kb_id, FOLLOW_UP, "rewritten")

    calls = fake_openai.requests[calls_before:]
    [rewrite] = [call for call in calls if call.path == CHAT and is_rewrite(call.body)]
    [answer] = [call for call in calls if call.path == CHAT and not is_rewrite(call.body)]
    rewrite_prompt = rewrite.body["messages"][-1]["content"]
    assert "What does UNESCO do?" in rewrite_prompt
    assert FOLLOW_UP in rewrite_prompt
    assert rewrite.body["temperature"] == 0
    assert calls.index(rewrite) < calls.index(answer)
    embedded = [call.body["input"] for call in calls if call.path == EMBEDDINGS]
    assert ["Where does the UNESCO secretariat sit?"] in embedded
    assert answer.body["messages"][-1]["content"].endswith("Question: Where does the UNESCO secretariat sit?")


def test_with_an_llm_a_lone_question_is_not_rewritten(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    with (
        live_server(make_settings(tmp_path, **openai_env(fake_openai.base_url))) as server,
        server.client(auth()) as client,
    ):
        kb_id = create_kb(client, "organisations")
        ingest(client, kb_id, title="UNESCO", text=UNESCO)
        chat(client, kb_id, "What does UNESCO do?", "first-turn")

    assert not [call for call in fake_openai.requests if call.path == CHAT and is_rewrite(call.body)]
