"""Retries against the real server: a 503 is sent again after its ``Retry-After``; an answer lost on the way
back is asked again only when the request cannot do anything twice, and a creation's retry carries the first
attempt's ``Idempotency-Key``, so the server stores it once. Both clients."""

from __future__ import annotations

import time

import pytest
from ragwatch_client import AnswerDone, APIConnectionError, ServiceUnavailableError

from tests.clients.both import Api, collect, resolve
from tests.clients.conftest import Connect, LosesAnswers
from tests.fake_openai import CHAT, FakeOpenAI
from tests.support import HANDBOOK, LiveServer

QUESTION = "How many days of paid vacation does an employee get?"


async def test_a_lost_answer_to_an_ingestion_is_asked_again_with_the_same_key_and_stored_once(
    connect: Connect, api: Api, kb_id: str
) -> None:
    lossy = LosesAnswers(1)

    created = await resolve(connect(transport=lossy).documents.create(kb_id, "Expenses", "Receipts within 14 days."))

    [first, second] = lossy.keys
    assert first
    assert second == first
    documents = await collect(api.documents.list(kb_id))
    assert sorted(document.title for document in documents) == ["Expenses", "Handbook"]
    assert created.document_id in {document.document_id for document in documents}


async def test_a_lost_answer_to_a_creation_is_asked_again_with_the_same_key_and_creates_once(
    connect: Connect, api: Api
) -> None:
    lossy = LosesAnswers(1)

    created = await resolve(connect(transport=lossy).knowledge_bases.create("once"))

    assert len(lossy.keys) == 2
    assert lossy.keys[0] == lossy.keys[1]
    assert [kb.id for kb in await collect(api.knowledge_bases.list())] == [created.id]


async def test_a_lost_chat_answer_is_not_asked_again(connect: Connect, kb_id: str) -> None:
    """A chat may have been answered (and paid for): the client says the connection failed, once."""
    lossy = LosesAnswers(1)

    with pytest.raises(APIConnectionError) as raised:
        await resolve(connect(transport=lossy).chat(kb_id, QUESTION))

    assert lossy.keys == [None]
    assert "dropped" in str(raised.value.__cause__)


async def test_a_lost_read_is_asked_again_up_to_max_retries(connect: Connect, kb_id: str) -> None:
    recovers, gives_up = LosesAnswers(1), LosesAnswers(2)

    detail = await resolve(connect(transport=recovers, max_retries=1).knowledge_bases.get(kb_id))
    with pytest.raises(APIConnectionError):
        await resolve(connect(transport=gives_up, max_retries=1).knowledge_bases.get(kb_id))

    assert detail.document_count == 1
    assert len(recovers.keys) == 2
    assert len(gives_up.keys) == 2
    assert gives_up.count == 0


@pytest.fixture
async def llm_kb(connect: Connect, llm_server: LiveServer) -> tuple[Api, str]:
    """A client of the server with the fake LLM, and a knowledge base there holding the handbook."""
    api = connect(url=llm_server.url, user="retrier")
    kb = await resolve(api.knowledge_bases.create("handbook"))
    await resolve(api.documents.create(kb.id, "Handbook", HANDBOOK))
    return api, kb.id


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_a_503_is_sent_again_after_its_retry_after(
    llm_kb: tuple[Api, str], fake_llm: FakeOpenAI, streamed: bool
) -> None:
    """The provider refuses once with 429 and ``Retry-After: 1``; the server answers 503 with it."""
    api, kb_id = llm_kb
    fake_llm.fail_next(1, status=429, path=CHAT, retry_after="1")
    calls_before = len(fake_llm.calls(CHAT))
    started = time.monotonic()

    if streamed:
        done = (await collect(api.chat_stream(kb_id, QUESTION)))[-1]
        assert isinstance(done, AnswerDone)
        cited = done.citations
    else:
        cited = (await resolve(api.chat(kb_id, QUESTION))).citations

    assert time.monotonic() - started >= 1
    assert len(fake_llm.calls(CHAT)) - calls_before == 2
    assert cited[0].title == "Handbook"


async def test_without_retries_the_503_is_raised_with_its_retry_after(
    connect: Connect, llm_server: LiveServer, llm_kb: tuple[Api, str], fake_llm: FakeOpenAI
) -> None:
    _, kb_id = llm_kb
    api = connect(url=llm_server.url, user="retrier", max_retries=0)
    fake_llm.fail_next(1, status=429, path=CHAT, retry_after="7")

    with pytest.raises(ServiceUnavailableError) as raised:
        await resolve(api.chat(kb_id, QUESTION))

    assert raised.value.status == 503
    assert raised.value.slug == "llm-provider-rate-limited"
    assert raised.value.retry_after == 7
