"""A failing LLM provider, end to end: the circuit opens, calls fail at once while it is open, one trial call per
cool-down, and retries never multiply the outage (ragwatch over HTTP, the real ``openai`` client, the fake LLM)."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.fake_openai import CHAT, EMBEDDINGS, FakeOpenAI, fake_openai, openai_env
from tests.support import HANDBOOK, assert_problem, auth, create_kb, ingest, live_server, make_settings, metric_total

__all__ = ["fake_openai"]  # the fixture, imported for pytest

QUESTION = "How many days of paid vacation does an employee get?"
ALWAYS = 1_000_000
"""Failures enough for every call a test makes: a dead provider."""


@contextmanager
def ragwatch(data_dir: Path, fake: FakeOpenAI, **env: str) -> Iterator[httpx.Client]:
    """ragwatch answering with the fake LLM (the offline hashing embedder, unless ``env`` says otherwise)."""
    settings = make_settings(data_dir, **openai_env(fake.base_url, **{"RAGWATCH_EMBEDDER": "hashing", **env}))
    with live_server(settings) as server, server.client(auth()) as client:
        yield client


def handbook(client: httpx.Client) -> str:
    kb_id = create_kb(client, "handbook")
    ingest(client, kb_id, title="Handbook", text=HANDBOOK)
    return kb_id


def chat(client: httpx.Client, kb_id: str, question: str = QUESTION) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    reply = client.post("/v1/chat", json={"kb_id": kb_id, "question": question})
    return reply, time.perf_counter() - started


def circuit_open(client: httpx.Client, operation: str) -> float:
    return metric_total(client, "rag_llm_circuit_open", provider="openai", operation=operation)


def test_a_dead_provider_gets_the_failures_that_open_the_circuit_and_then_every_chat_fails_at_once(
    fake_openai: FakeOpenAI, data_dir: Path
) -> None:
    """Retries included (two per call by default): 30 chats cost the provider 5 calls, not 90."""
    with ragwatch(
        data_dir, fake_openai, RAGWATCH_LLM_MAX_RETRIES="2", RAGWATCH_CACHE_ANSWERS_ENABLED="false"
    ) as client:
        kb_id = handbook(client)
        fake_openai.fail_next(ALWAYS, 500, path=CHAT)
        replies = [chat(client, kb_id) for _ in range(30)]
        gauge = circuit_open(client, "chat")
        not_made = metric_total(client, "rag_llm_calls_total", provider="openai", status="circuit_open")
        retried = metric_total(client, "rag_llm_retries_total", operation="chat", outcome="retried")

    assert len(fake_openai.calls(CHAT)) == 5
    paused = [(reply, seconds) for reply, seconds in replies if reply.status_code == 503]
    assert len(paused) >= 27  # at most three chats (5 calls, up to 3 each) reached the provider
    for reply, _ in paused:
        assert_problem(reply, 503, "llm-provider-unavailable", detail=True)
        assert 1 <= int(reply.headers["retry-after"]) <= 30
    assert statistics.median(seconds for _, seconds in paused) < 0.05
    assert gauge == 1
    assert not_made == len(paused)
    assert retried == 3  # two of the first chat, one of the second, whose retry opened the circuit


def test_one_trial_call_per_cooldown_reaches_a_provider_that_stays_dead(
    fake_openai: FakeOpenAI, data_dir: Path
) -> None:
    with ragwatch(
        data_dir,
        fake_openai,
        RAGWATCH_LLM_BREAKER_COOLDOWN_S="0.5",
        RAGWATCH_CACHE_ANSWERS_ENABLED="false",
    ) as client:
        kb_id = handbook(client)
        fake_openai.fail_next(ALWAYS, 503, path=CHAT)
        started = time.monotonic()
        statuses = set()
        while time.monotonic() - started < 2.6:
            statuses.add(chat(client, kb_id)[0].status_code)
        elapsed = time.monotonic() - started

    calls = len(fake_openai.calls(CHAT))
    assert 5 + 2 <= calls <= 5 + math.ceil(elapsed / 0.5)
    assert statuses <= {502, 503}


def test_a_provider_that_recovers_closes_the_circuit_with_its_trial_call(
    fake_openai: FakeOpenAI, data_dir: Path
) -> None:
    with ragwatch(
        data_dir, fake_openai, RAGWATCH_LLM_BREAKER_COOLDOWN_S="0.5", RAGWATCH_CACHE_ANSWERS_ENABLED="false"
    ) as client:
        kb_id = handbook(client)
        fake_openai.fail_next(5, 500, path=CHAT)
        failed = [chat(client, kb_id)[0].status_code for _ in range(6)]
        opened = circuit_open(client, "chat")
        time.sleep(0.6)
        trial, _ = chat(client, kb_id)
        closed = circuit_open(client, "chat")
        after, _ = chat(client, kb_id)

    assert failed == [502] * 5 + [503]
    assert opened == 1
    assert trial.status_code == 200, trial.text
    assert trial.json()["answer"] == fake_openai.answer
    assert closed == 0
    assert after.status_code == 200
    assert len(fake_openai.calls(CHAT)) == 7


def test_cached_answers_are_still_served_while_the_circuit_is_open(fake_openai: FakeOpenAI, data_dir: Path) -> None:
    with ragwatch(data_dir, fake_openai) as client:
        kb_id = handbook(client)
        first, _ = chat(client, kb_id)
        fake_openai.fail_next(ALWAYS, 500, path=CHAT)
        for number in range(6):
            chat(client, kb_id, f"Question number {number} about paid vacation days?")
        uncached, _ = chat(client, kb_id, "What about vacation in March?")
        cached, _ = chat(client, kb_id)

    assert first.status_code == 200
    assert_problem(uncached, 503, "llm-provider-unavailable")
    assert cached.status_code == 200, cached.text
    assert cached.json()["answer"] == first.json()["answer"]
    assert cached.json()["cached"] is True


def test_a_provider_refusing_what_it_is_asked_with_400_never_opens_the_circuit(
    fake_openai: FakeOpenAI, data_dir: Path
) -> None:
    """A 400 is the request's fault (a prompt too long): one user's bad requests must not pause everyone's."""
    with ragwatch(data_dir, fake_openai, RAGWATCH_CACHE_ANSWERS_ENABLED="false") as client:
        kb_id = handbook(client)
        fake_openai.fail_next(10, 400, path=CHAT)
        statuses = [chat(client, kb_id)[0].status_code for _ in range(10)]
        gauge = circuit_open(client, "chat")
        answered, _ = chat(client, kb_id)

    assert statuses == [502] * 10
    assert len(fake_openai.calls(CHAT)) == 11
    assert gauge == 0
    assert answered.status_code == 200


def test_the_embeddings_circuit_opens_apart_from_the_chat_one(fake_openai: FakeOpenAI, data_dir: Path) -> None:
    with ragwatch(data_dir, fake_openai, RAGWATCH_EMBEDDER="openai") as client:
        kb_id = create_kb(client, "handbook")
        fake_openai.fail_next(ALWAYS, 500, path=EMBEDDINGS)
        url = f"/v1/knowledge-bases/{kb_id}/documents"
        statuses = [client.post(url, json={"title": f"D{n}", "text": HANDBOOK}).status_code for n in range(8)]
        embeddings, chats = circuit_open(client, "embeddings"), circuit_open(client, "chat")
        stored = client.get(f"/v1/knowledge-bases/{kb_id}").json()["document_count"]

    assert len(fake_openai.calls(EMBEDDINGS)) == 5
    assert statuses[-1] == 503
    assert set(statuses) == {502, 503}
    assert (embeddings, chats) == (1, 0)
    assert stored == 0
