"""The OpenAI-compatible providers, end to end: ragwatch over HTTP, the real ``openai`` client, a fake LLM server.

The fake (tests/fake_openai.py) is the only stand-in: everything between the test's HTTP call and the fake's
socket is the production code path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.providers import NO_ANSWER
from service.providers.base import SYSTEM_PROMPT
from tests.fake_openai import API_KEY, CHAT, EMBEDDINGS, FAKE_MODEL, FakeOpenAI, fake_openai, openai_env
from tests.support import HANDBOOK, assert_problem, auth, create_kb, free_port, ingest, live_server, make_settings

__all__ = ["fake_openai"]  # the fixture, imported for pytest

QUESTION = "How many days of paid vacation does an employee get?"


@contextmanager
def ragwatch(data_dir: Path, base_url: str, **env: str) -> Iterator[httpx.Client]:
    """A ragwatch server whose providers call ``base_url``, and a client of tenant ``acme`` for it."""
    with live_server(make_settings(data_dir, **openai_env(base_url, **env))) as server, server.client(auth()) as client:
        yield client


def _ingest(client: httpx.Client, kb_id: str, text: str = HANDBOOK) -> httpx.Response:
    """Post a document and return the answer whatever it is: some tests expect the ingestion to fail."""
    return client.post(f"/v1/knowledge-bases/{kb_id}/documents", json={"title": "Handbook", "text": text})


def _kb_with_handbook(client: httpx.Client) -> str:
    kb_id = create_kb(client, "handbook")
    ingest(client, kb_id, title="Handbook", text=HANDBOOK)
    return kb_id


def _assert_key_not_leaked(response: httpx.Response) -> None:
    assert API_KEY not in response.text
    assert all(API_KEY not in value for value in response.headers.values())


# --- the happy path ---------------------------------------------------------------------------------------


def test_ingest_embeds_the_chunks_through_the_embeddings_api(fake_openai: FakeOpenAI, data_dir: Path) -> None:
    with ragwatch(data_dir, fake_openai.base_url) as client:
        kb_id = create_kb(client, "handbook")
        ingested = _ingest(client, kb_id)

    assert ingested.status_code == 201, ingested.text
    calls = fake_openai.calls(EMBEDDINGS)
    assert len(calls) == 1
    body = calls[0].body
    assert body["model"] == "text-embedding-3-small"
    assert body["dimensions"] == 384
    assert body["encoding_format"] == "float"
    assert len(body["input"]) == ingested.json()["chunks"]
    assert "twenty-five days of paid vacation" in " ".join(body["input"])
    assert calls[0].headers["authorization"] == f"Bearer {API_KEY}"
    _assert_key_not_leaked(ingested)


def test_ingest_sends_many_chunks_in_batches_of_at_most_128(fake_openai: FakeOpenAI, data_dir: Path) -> None:
    paragraphs = [f"Paragraph {n} of the long handbook explains rule number {n} in detail." for n in range(200)]

    with ragwatch(data_dir, fake_openai.base_url, RAGWATCH_CHUNK_SIZE="100", RAGWATCH_CHUNK_OVERLAP="0") as client:
        ingested = _ingest(client, create_kb(client, "handbook"), "\n\n".join(paragraphs))

    assert ingested.status_code == 201, ingested.text
    chunks = ingested.json()["chunks"]
    assert chunks > 128
    sizes = [len(call.body["input"]) for call in fake_openai.calls(EMBEDDINGS)]
    assert len(sizes) == math.ceil(chunks / 128)
    assert max(sizes) <= 128
    assert sum(sizes) == chunks


def test_chat_asks_the_chat_completions_api_with_a_grounding_prompt_and_returns_its_answer(
    fake_openai: FakeOpenAI, data_dir: Path
) -> None:
    fake_openai.answer = "Employees get twenty-five days of paid vacation per year [1]."

    with ragwatch(data_dir, fake_openai.base_url) as client:
        kb_id = _kb_with_handbook(client)
        reply = client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION})

    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["answer"] == "Employees get twenty-five days of paid vacation per year [1]."
    assert body["model"] == FAKE_MODEL  # the model that answered, not the one asked for
    assert body["usage"] == {"input_tokens": fake_openai.prompt_tokens, "output_tokens": fake_openai.completion_tokens}
    assert body["citations"]
    assert body["citations"][0]["title"] == "Handbook"
    assert "twenty-five days" in body["citations"][0]["text"]
    _assert_key_not_leaked(reply)

    [call] = fake_openai.calls(CHAT)
    assert call.headers["authorization"] == f"Bearer {API_KEY}"
    assert call.body["model"] == "gpt-4o-mini"
    assert call.body.get("stream") in (None, False)
    assert call.body["max_tokens"] == 512
    system, user = call.body["messages"]
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert "using only the numbered context passages" in system["content"]
    assert "Cite every statement" in system["content"]
    assert user["role"] == "user"
    assert QUESTION in user["content"]
    assert "[1] Handbook" in user["content"]
    assert "Every employee gets twenty-five days of paid vacation per year." in user["content"]


def test_chat_embeds_the_question_with_the_same_model_as_the_documents(fake_openai: FakeOpenAI, data_dir: Path) -> None:
    fake_openai.reverse_embedding_order = True  # each vector must still land on its own chunk

    with ragwatch(data_dir, fake_openai.base_url, RAGWATCH_CHUNK_SIZE="100", RAGWATCH_CHUNK_OVERLAP="0") as client:
        kb_id = _kb_with_handbook(client)
        reply = client.post("/v1/chat", json={"kb_id": kb_id, "question": "When are travel expenses reimbursed?"})

    assert reply.status_code == 200, reply.text
    question_call = fake_openai.calls(EMBEDDINGS)[-1]
    assert question_call.body["input"] == ["When are travel expenses reimbursed?"]
    assert question_call.body["model"] == "text-embedding-3-small"
    assert "reimbursed within fourteen days" in reply.json()["citations"][0]["text"]


def test_chat_without_a_relevant_passage_answers_without_calling_the_llm(
    fake_openai: FakeOpenAI, data_dir: Path
) -> None:
    with ragwatch(data_dir, fake_openai.base_url) as client:
        empty_kb = create_kb(client, "handbook")
        handbook_kb = _kb_with_handbook(client)
        replies = [
            client.post("/v1/chat", json={"kb_id": empty_kb, "question": QUESTION}),
            client.post("/v1/chat", json={"kb_id": handbook_kb, "question": "Which rocket engine powers Saturn?"}),
            client.post("/v1/chat", json={"kb_id": empty_kb, "question": QUESTION, "stream": True}),
        ]

    for reply in replies:
        assert reply.status_code == 200, reply.text
    for reply in replies[:2]:
        body = reply.json()
        assert body["answer"] == NO_ANSWER
        assert body["citations"] == []
        assert body["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert NO_ANSWER in replies[2].text
    assert '"citations":[]' in replies[2].text
    assert fake_openai.calls(CHAT) == []
    # The handbook, then the two distinct questions: the repeated one is answered from the answer cache.
    assert len(fake_openai.calls(EMBEDDINGS)) == 1 + 2


def test_the_client_retries_a_failed_call_when_retries_are_allowed(fake_openai: FakeOpenAI, data_dir: Path) -> None:
    with ragwatch(data_dir, fake_openai.base_url, RAGWATCH_LLM_MAX_RETRIES="2") as client:
        kb_id = _kb_with_handbook(client)
        fake_openai.fail_next(1, 500, path=CHAT)
        reply = client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION})

    assert reply.status_code == 200, reply.text
    assert reply.json()["answer"] == fake_openai.answer
    assert len(fake_openai.calls(CHAT)) == 2


def test_a_key_is_optional_for_a_local_server_given_by_its_base_url(fake_openai: FakeOpenAI, data_dir: Path) -> None:
    env = {**openai_env(fake_openai.base_url), "OPENAI_API_KEY": ""}

    with live_server(make_settings(data_dir, **env)) as server, server.client(auth()) as client:
        kb_id = _kb_with_handbook(client)
        reply = client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION})

    assert reply.status_code == 200, reply.text
    assert reply.json()["model"] == FAKE_MODEL
    assert all(API_KEY not in call.headers.get("authorization", "") for call in fake_openai.requests)


# --- failures become problems -----------------------------------------------------------------------------

Arrange = Callable[[FakeOpenAI, str], None]


def _status(status: int, retry_after: str | None = None) -> Arrange:
    def arrange(fake: FakeOpenAI, path: str) -> None:
        fake.fail_next(1, status, path=path, retry_after=retry_after)

    return arrange


def _slow(fake: FakeOpenAI, path: str) -> None:
    fake.delay_s = 3.0
    fake.delay_path = path


def _malformed(fake: FakeOpenAI, path: str) -> None:
    fake.malformed_path = path
    fake.malformed_after_chunks = 0


@dataclass(frozen=True)
class Failure:
    arrange: Arrange
    """Make the fake fail the next call to a path."""
    status: int
    slug: str


FAILURES = [
    pytest.param(Failure(_status(429, retry_after="7"), 503, "llm-provider-rate-limited"), id="429"),
    pytest.param(Failure(_status(500), 502, "llm-provider-error"), id="500"),
    pytest.param(Failure(_status(503), 502, "llm-provider-error"), id="503"),
    pytest.param(Failure(_status(400), 502, "llm-provider-error"), id="400"),
    pytest.param(Failure(_slow, 504, "llm-provider-timeout"), id="timeout"),
    pytest.param(Failure(_malformed, 502, "llm-provider-error"), id="not-json"),
]
TARGETS = [
    pytest.param("ingest", id="ingest"),
    pytest.param("chat", id="chat"),
    pytest.param("stream", id="stream"),
]


def _call(client: httpx.Client, target: str, kb_id: str) -> httpx.Response:
    if target == "ingest":
        return _ingest(client, kb_id)
    return client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION, "stream": target == "stream"})


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("failure", FAILURES)
def test_a_provider_failure_is_reported_as_a_problem(
    fake_openai: FakeOpenAI, data_dir: Path, target: str, failure: Failure
) -> None:
    """Ingestion fails on its embeddings call; a chat, streamed or not, on its chat completions call."""
    with ragwatch(data_dir, fake_openai.base_url, RAGWATCH_LLM_TIMEOUT_S="0.5") as client:
        kb_id = create_kb(client, "handbook") if target == "ingest" else _kb_with_handbook(client)
        failure.arrange(fake_openai, EMBEDDINGS if target == "ingest" else CHAT)
        reply = _call(client, target, kb_id)
        after = client.get(f"/v1/knowledge-bases/{kb_id}")

    assert_problem(reply, failure.status, failure.slug, sent=API_KEY, detail=True)
    if failure.slug.endswith("rate-limited"):
        assert reply.headers["retry-after"] == "7"
    else:
        assert "retry-after" not in reply.headers
    # Nothing half-done is left behind: a failed ingestion stored no chunk.
    expected_chunks = 0 if target == "ingest" else 1
    assert after.json()["chunk_count"] == expected_chunks


@pytest.mark.parametrize(
    ("sent", "relayed"),
    [
        pytest.param({"retry-after": "12"}, "12", id="seconds"),
        pytest.param({"retry-after": "1.2"}, "2", id="fraction-rounded-up"),
        pytest.param({"retry-after-ms": "2500"}, "3", id="milliseconds"),
        pytest.param({"retry-after": "Wed, 21 Oct 2037 07:28:00 GMT"}, "Wed, 21 Oct 2037 07:28:00 GMT", id="date"),
        pytest.param({"retry-after": "soon"}, None, id="unusable"),
        pytest.param({}, None, id="absent"),
    ],
)
def test_a_rate_limited_provider_tells_the_client_when_to_retry(
    fake_openai: FakeOpenAI, data_dir: Path, sent: dict[str, str], relayed: str | None
) -> None:
    with ragwatch(data_dir, fake_openai.base_url) as client:
        kb_id = _kb_with_handbook(client)
        fake_openai.fail_next(1, 429, path=CHAT, headers=sent)
        reply = client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION})

    assert_problem(reply, 503, "llm-provider-rate-limited", sent=API_KEY, detail=True)
    assert reply.headers.get("retry-after") == relayed


def test_an_embedding_model_of_another_width_is_a_provider_error_naming_the_setting(
    fake_openai: FakeOpenAI, data_dir: Path
) -> None:
    """Only text-embedding-3 models are asked for ``dimensions``; the fake's default width is then 1536."""
    with ragwatch(data_dir, fake_openai.base_url, RAGWATCH_EMBEDDING_MODEL="nomic-embed-text") as client:
        refused = _ingest(client, create_kb(client, "handbook"))
    with ragwatch(
        data_dir / "wide",
        fake_openai.base_url,
        RAGWATCH_EMBEDDING_MODEL="nomic-embed-text",
        RAGWATCH_EMBEDDING_DIMENSIONS="1536",
    ) as client:
        accepted = _ingest(client, create_kb(client, "handbook"))

    assert_problem(refused, 502, "llm-provider-error", sent=API_KEY, detail=True)
    assert "RAGWATCH_EMBEDDING_DIMENSIONS" in refused.json()["detail"]
    assert accepted.status_code == 201, accepted.text
    calls = fake_openai.calls(EMBEDDINGS)
    assert [call.body["model"] for call in calls] == ["nomic-embed-text", "nomic-embed-text"]
    assert all("dimensions" not in call.body for call in calls)


@pytest.mark.parametrize("target", TARGETS)
def test_an_unreachable_provider_is_reported_as_unavailable(data_dir: Path, target: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    # Chats embed locally so that only the chat completion call goes to the closed port.
    embedder = "openai" if target == "ingest" else "hashing"

    with ragwatch(data_dir, closed, RAGWATCH_EMBEDDER=embedder) as client:
        kb_id = create_kb(client, "handbook") if target == "ingest" else _kb_with_handbook(client)
        reply = _call(client, target, kb_id)

    assert_problem(reply, 503, "llm-provider-unavailable", sent=API_KEY, detail=True)
