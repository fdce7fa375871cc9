"""Search, chat, the typed events of a streamed chat, and conversations, with both clients."""

from __future__ import annotations

import re
import uuid

import pytest
from ragwatch_client import (
    AnswerDelta,
    AnswerDone,
    ChatEvent,
    ChatResponse,
    Conversation,
    FeedbackAccepted,
    NotFoundError,
    Passage,
    SearchResults,
    ServerError,
)

from tests.clients.both import Api, collect, resolve
from tests.clients.conftest import Connect
from tests.fake_openai import FakeOpenAI
from tests.support import HANDBOOK, LiveServer

QUESTION = "How many days of paid vacation does an employee get?"
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


async def test_search_returns_typed_passages_best_first(api: Api, kb_id: str) -> None:
    await resolve(api.documents.create(kb_id, "Parking", "Visitors park in the north garage, level two."))

    found = await resolve(api.search(kb_id, "where do visitors park in the garage", top_k=1))

    assert isinstance(found, SearchResults)
    [passage] = found.results
    assert isinstance(passage, Passage)
    assert passage.title == "Parking"
    assert "north garage" in passage.text
    assert 0 < passage.score <= 1


async def test_chat_answers_with_citations_usage_and_trace_id(api: Api, kb_id: str) -> None:
    reply = await resolve(api.chat(kb_id, QUESTION, top_k=2))

    assert isinstance(reply, ChatResponse)
    assert "twenty-five days" in reply.answer
    assert "[1]" in reply.answer
    assert reply.citations[0].title == "Handbook"
    assert len(reply.citations) <= 2
    assert reply.model == "extractive"
    assert reply.usage.output_tokens > 0
    assert TRACE_ID.match(reply.trace_id)
    assert reply.conversation_id is None


async def test_chat_stream_yields_deltas_then_one_done(api: Api, kb_id: str) -> None:
    whole = await resolve(api.chat(kb_id, QUESTION))

    events = await collect(api.chat_stream(kb_id, QUESTION + " Per year?"))

    *deltas, done = events
    assert deltas
    assert all(isinstance(event, AnswerDelta) for event in deltas)
    assert isinstance(done, AnswerDone)
    text = "".join(event.text for event in deltas if isinstance(event, AnswerDelta))
    assert "twenty-five days" in text
    assert done.citations[0].title == whole.citations[0].title == "Handbook"
    assert done.model == "extractive"
    assert TRACE_ID.match(done.trace_id)
    assert done.trace_id != whole.trace_id
    assert done.usage.output_tokens > 0


async def test_chat_stream_of_an_unknown_knowledge_base_raises_before_any_event(api: Api) -> None:
    with pytest.raises(NotFoundError) as raised:
        await collect(api.chat_stream("kb-missing", QUESTION))

    assert raised.value.status == 404
    assert raised.value.trace_id is not None


async def test_a_provider_failure_mid_stream_raises_the_error_event_after_the_deltas(
    connect: Connect, llm_server: LiveServer, fake_llm: FakeOpenAI
) -> None:
    api = connect(url=llm_server.url)
    kb = await resolve(api.knowledge_bases.create("handbook"))
    await resolve(api.documents.create(kb.id, "Handbook", HANDBOOK))
    fake_llm.answer = "Twenty-five days of paid vacation per year, says the handbook [1]."
    fake_llm.malformed_after_chunks = 3
    received: list[ChatEvent] = []

    with pytest.raises(ServerError) as raised:
        await collect(api.chat_stream(kb.id, QUESTION), into=received)

    assert received
    assert all(isinstance(event, AnswerDelta) for event in received)
    assert raised.value.status == 502
    assert raised.value.slug == "llm-provider-error"
    assert raised.value.detail


async def test_a_conversation_keeps_its_turns_until_deleted(api: Api, kb_id: str) -> None:
    conversation_id = f"c-{uuid.uuid4().hex[:12]}"

    first = await resolve(api.chat(kb_id, QUESTION, conversation_id=conversation_id))
    events = await collect(api.chat_stream(kb_id, "And when do unused days expire?", conversation_id=conversation_id))
    conversation = await resolve(api.conversations.get(conversation_id))
    await resolve(api.conversations.delete(conversation_id))

    assert first.conversation_id == conversation_id
    done = events[-1]
    assert isinstance(done, AnswerDone)
    assert done.conversation_id == conversation_id
    assert isinstance(conversation, Conversation)
    assert conversation.id == conversation_id
    assert [turn.question for turn in conversation.turns] == [QUESTION, "And when do unused days expire?"]
    assert conversation.turns[0].answer == first.answer
    assert conversation.turns[0].trace_id == first.trace_id
    assert conversation.turns[1].trace_id == done.trace_id
    assert conversation.turns[0].citations[0].title == "Handbook"
    with pytest.raises(NotFoundError):
        await resolve(api.conversations.get(conversation_id))


async def test_another_users_conversation_is_not_found(connect: Connect, kb_id: str) -> None:
    alice, bob = connect(("admin",), "alice"), connect(("member",), "bob")
    await resolve(alice.chat(kb_id, QUESTION, conversation_id="private"))

    with pytest.raises(NotFoundError):
        await resolve(bob.conversations.get("private"))
    with pytest.raises(NotFoundError):
        await resolve(bob.conversations.delete("private"))
    assert len((await resolve(alice.conversations.get("private"))).turns) == 1


async def test_feedback_rates_an_answer_by_its_trace_id(api: Api, kb_id: str) -> None:
    reply = await resolve(api.chat(kb_id, QUESTION))

    accepted = await resolve(api.feedback(reply.trace_id, "down", "Which year?"))

    assert isinstance(accepted, FeedbackAccepted)
    assert (accepted.trace_id, accepted.kb_id, accepted.rating) == (reply.trace_id, kb_id, "down")
    with pytest.raises(NotFoundError):
        await resolve(api.feedback("0" * 32, "up"))
