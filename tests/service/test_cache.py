"""The embeddings, retrieval and answer caches against a real redis-server: a hit is the identical answer without
an LLM call, a change to the knowledge base is never answered from before it, tenants never share entries,
identical concurrent questions make one LLM call, and Redis going away costs speed, never answers.

The LLM is the local OpenAI-compatible server (tests/fake_openai.py), so every LLM call is counted; questions
are embedded by the offline embedder unless a test says otherwise.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_openai import CHAT, EMBEDDINGS, FakeOpenAI, fake_openai, openai_env
from tests.support import (
    HANDBOOK,
    LiveServer,
    RedisServer,
    auth,
    create_kb,
    documents_url,
    ingest,
    live_server,
    make_settings,
    metric_total,
)
from tests.tcp_proxy import SlowProxy

__all__ = ["fake_openai"]

QUESTION = "How many days of paid vacation does an employee get?"


@contextmanager
def service(data_dir: Path, redis: RedisServer, fake: FakeOpenAI, **env: str) -> Iterator[LiveServer]:
    """The app with caches in ``redis`` and the fake LLM (questions embedded offline unless ``env`` says)."""
    chosen = {"RAGWATCH_EMBEDDER": "hashing", "RAGWATCH_REDIS_URL": redis.url, **env}
    settings = make_settings(data_dir, **openai_env(fake.base_url, **chosen))
    with live_server(settings) as running:
        yield running


def ask(client: httpx.Client, kb_id: str, question: str = QUESTION, **fields: Any) -> dict[str, Any]:
    reply = client.post("/v1/chat", json={"kb_id": kb_id, "question": question, **fields})
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def answer_fields(body: dict[str, Any]) -> dict[str, Any]:
    """What a cached answer must repeat exactly: everything but the request's own trace id and ``cached``."""
    return {name: value for name, value in body.items() if name not in ("trace_id", "cached")}


def redis_keys(redis: RedisServer) -> list[str]:
    reply = redis.command("KEYS", "*").decode()
    return [line for line in reply.split("\r\n") if line and not line.startswith(("*", "$"))]


@pytest.fixture
def redis(own_redis: RedisServer) -> RedisServer:
    return own_redis


def test_a_repeated_question_is_answered_from_the_cache_identically_without_an_llm_call(
    tmp_path: Path, redis: RedisServer, fake_openai: FakeOpenAI
) -> None:
    # One process: no other replica can read the data as it was, so no settling renewal (which would drop an
    # answer computed within RAGWATCH_READ_CONSISTENCY_S of the write, and make this test depend on timing).
    settled = {"RAGWATCH_EMBEDDER": "openai", "RAGWATCH_READ_CONSISTENCY_S": "0"}
    with service(tmp_path, redis, fake_openai, **settled) as server, server.client(auth()) as client:
        kb_id = create_kb(client, "handbook")
        ingest(client, kb_id, title="Handbook", text=HANDBOOK)
        embedded_before = len(fake_openai.calls(EMBEDDINGS))
        first = ask(client, kb_id)
        again = ask(client, kb_id, f"  {QUESTION.upper()}  ")  # the same question up to case and spacing
        streamed = client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION, "stream": True})
        hits = metric_total(client, "rag_cache_lookups_total", cache="answers", outcome="hit")

    assert first["cached"] is False
    assert again["cached"] is True
    assert answer_fields(again) == answer_fields(first)
    assert again["trace_id"] != first["trace_id"]
    assert '"cached":true' in streamed.text
    assert first["answer"] in streamed.text
    assert len(fake_openai.calls(CHAT)) == 1
    assert len(fake_openai.calls(EMBEDDINGS)) == embedded_before + 1
    assert hits == 2


def test_a_question_embedding_is_reused_by_another_knowledge_base(
    tmp_path: Path, redis: RedisServer, fake_openai: FakeOpenAI
) -> None:
    with service(tmp_path, redis, fake_openai, RAGWATCH_EMBEDDER="openai") as server, server.client(auth()) as client:
        kb_ids = [create_kb(client, name) for name in ("first", "second")]
        for kb_id in kb_ids:
            ingest(client, kb_id, title="Handbook", text=HANDBOOK)
        embedded_before = len(fake_openai.calls(EMBEDDINGS))
        answers = [ask(client, kb_id) for kb_id in kb_ids]

    assert [answer["cached"] for answer in answers] == [False, False]
    assert len(fake_openai.calls(EMBEDDINGS)) == embedded_before + 1
    assert len(fake_openai.calls(CHAT)) == 2


def test_with_the_answer_cache_off_a_repeated_question_reuses_the_retrieval_but_asks_the_llm_again(
    tmp_path: Path, redis: RedisServer, fake_openai: FakeOpenAI
) -> None:
    env = {"RAGWATCH_EMBEDDER": "openai", "RAGWATCH_CACHE_ANSWERS_ENABLED": "false"}
    with service(tmp_path, redis, fake_openai, **env) as server, server.client(auth()) as client:
        kb_id = create_kb(client, "handbook")
        ingest(client, kb_id, title="Handbook", text=HANDBOOK)
        embedded_before = len(fake_openai.calls(EMBEDDINGS))
        answers = [ask(client, kb_id), ask(client, kb_id)]
        retrieval_hits = metric_total(client, "rag_cache_lookups_total", cache="retrieval", outcome="hit")

    assert [answer["cached"] for answer in answers] == [False, False]
    assert len(fake_openai.calls(CHAT)) == 2
    assert len(fake_openai.calls(EMBEDDINGS)) == embedded_before + 1  # the second retrieval came from the cache
    assert retrieval_hits == 1


def test_a_cached_answer_expires_after_its_ttl(tmp_path: Path, redis: RedisServer, fake_openai: FakeOpenAI) -> None:
    with (
        service(tmp_path, redis, fake_openai, RAGWATCH_CACHE_ANSWERS_TTL_S="1") as server,
        server.client(auth()) as client,
    ):
        kb_id = create_kb(client, "handbook")
        ingest(client, kb_id, title="Handbook", text=HANDBOOK)
        fresh = [ask(client, kb_id), ask(client, kb_id)]
        time.sleep(1.5)  # past the TTL: Redis drops the entry
        expired = ask(client, kb_id)

    assert [answer["cached"] for answer in fresh] == [False, True]
    assert expired["cached"] is False
    assert len(fake_openai.calls(CHAT)) == 2


def test_the_in_process_cache_keeps_at_most_its_entry_limit(tmp_path: Path) -> None:
    """``memory://`` drops the least recently used entries: a chat makes three (embedding, passages, answer)."""
    settings = make_settings(tmp_path, RAGWATCH_CACHE_MEMORY_MAX_ENTRIES="3")
    with live_server(settings) as server, server.client(auth()) as client:
        kb_id = create_kb(client, "handbook")
        ingest(client, kb_id, title="Handbook", text=HANDBOOK)
        first = [ask(client, kb_id), ask(client, kb_id)]
        ask(client, kb_id, "When do unused vacation days expire?")  # its three entries push the first ones out
        again = ask(client, kb_id)

    assert [answer["cached"] for answer in first] == [False, True]
    assert again["cached"] is False


def test_ingesting_replacing_or_deleting_a_document_is_never_answered_from_before_it(
    tmp_path: Path, redis: RedisServer, fake_openai: FakeOpenAI
) -> None:
    question = "Where is the offsite?"
    with service(tmp_path, redis, fake_openai, RAGWATCH_LLM="extractive") as server, server.client(auth()) as client:
        kb_id = create_kb(client, "events")
        ingest(client, kb_id, title="Parking", text="Parking is free on Fridays.")
        before = [ask(client, kb_id, question), ask(client, kb_id, question)]
        ingest(client, kb_id, id="offsite", title="Offsite", text="The offsite is in Lisbon this year.")
        ingested = [ask(client, kb_id, question), ask(client, kb_id, question)]
        ingest(client, kb_id, id="offsite", title="Offsite", text="The offsite moved to Porto this year.")
        replaced = [ask(client, kb_id, question), ask(client, kb_id, question)]
        assert client.delete(f"{documents_url(kb_id)}/offsite").status_code == 204
        deleted = [ask(client, kb_id, question), ask(client, kb_id, question)]

    for pair in (before, ingested, replaced, deleted):
        assert [body["cached"] for body in pair] == [False, True]
        assert answer_fields(pair[0]) == answer_fields(pair[1])
    assert "Lisbon" not in before[0]["answer"]
    assert "Lisbon" in ingested[0]["answer"]
    assert "Porto" in replaced[0]["answer"]
    assert "Lisbon" not in replaced[0]["answer"]
    assert "Porto" not in deleted[0]["answer"]
    assert all(citation["document_id"] != "offsite" for citation in deleted[0]["citations"])


def test_a_deleted_knowledge_base_is_not_answered_from_the_cache(
    tmp_path: Path, redis: RedisServer, fake_openai: FakeOpenAI
) -> None:
    with service(tmp_path, redis, fake_openai) as server, server.client(auth()) as client:
        kb_id = create_kb(client, "handbook")
        ingest(client, kb_id, title="Handbook", text=HANDBOOK)
        assert ask(client, kb_id)["cached"] is False
        assert client.delete(f"/v1/knowledge-bases/{kb_id}").status_code == 204
        after = client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION})

    assert after.status_code == 404, after.text


def test_tenants_never_share_cache_entries_and_no_key_holds_question_or_document_text(
    tmp_path: Path, redis: RedisServer, fake_openai: FakeOpenAI
) -> None:
    with (
        service(tmp_path, redis, fake_openai) as server,
        server.client(auth("acme")) as acme,
        server.client(auth("globex")) as globex,
    ):
        acme_kb = create_kb(acme, "handbook")
        ingest(acme, acme_kb, title="Handbook", text=HANDBOOK)
        acme_answer = ask(acme, acme_kb)
        assert ask(acme, acme_kb)["cached"] is True
        # The same question about acme's knowledge base, from another tenant: unknown to it, never the cached answer.
        foreign = globex.post("/v1/chat", json={"kb_id": acme_kb, "question": QUESTION})
        # The same question about globex's own copy of the same document: computed for globex, not acme's entry.
        globex_kb = create_kb(globex, "handbook")
        ingest(globex, globex_kb, title="Handbook", text=HANDBOOK)
        globex_first = ask(globex, globex_kb)
        keys = redis_keys(redis)

    assert acme_answer["cached"] is False
    assert foreign.status_code == 404, foreign.text
    assert globex_first["cached"] is False
    assert len(fake_openai.calls(CHAT)) == 2
    cache_keys = [key for key in keys if key.startswith("rw:c:")]
    caches = {key.split(":")[3] for key in cache_keys}
    assert {"embeddings", "retrieval", "answers", "gen"} <= caches
    assert {key.split(":")[2] for key in cache_keys} == {"{acme}", "{globex}"}
    words = {word.lower().strip("?.,") for word in (QUESTION + " " + HANDBOOK).split() if len(word) > 3}
    assert [key for key in keys for word in words if word in key.lower()] == []


def test_identical_concurrent_questions_make_one_llm_call_and_get_the_same_answer(
    tmp_path: Path, redis: RedisServer, fake_openai: FakeOpenAI
) -> None:
    fake_openai.delay_s = 0.5  # every call takes long enough for all the requests to arrive while it runs
    fake_openai.delay_path = CHAT
    # The server shares this process with eight client threads: a Redis reply may wait past the default 0.25 s
    # for the event loop, which would count as an outage and split the single flight; this test is not about that.
    patient = {"RAGWATCH_REDIS_TIMEOUT_S": "2"}
    with service(tmp_path, redis, fake_openai, **patient) as server, server.client(auth()) as client:
        kb_id = create_kb(client, "handbook")
        ingest(client, kb_id, title="Handbook", text=HANDBOOK)

        def one(streamed: bool) -> httpx.Response:
            return client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION, "stream": streamed})

        with ThreadPoolExecutor(max_workers=8) as pool:
            leader = pool.submit(one, False)
            replies = [leader, *(pool.submit(one, number % 4 == 3) for number in range(7))]
            results = [reply.result() for reply in replies]

    assert [result.status_code for result in results] == [200] * 8
    assert len(fake_openai.calls(CHAT)) == 1
    assert {answer_text(result) for result in results} == {fake_openai.answer}


def answer_text(response: httpx.Response) -> str:
    """The answer of a JSON reply, or the joined ``delta`` events of a streamed one."""
    if response.headers["content-type"].startswith("application/json"):
        return str(response.json()["answer"])
    lines = response.text.splitlines()
    deltas = [
        json.loads(data[len("data: ") :])["text"]
        for event, data in itertools.pairwise(lines)
        if event == "event: delta"
    ]
    return "".join(deltas)


def test_while_redis_is_down_chat_answers_uncached_readiness_is_degraded_and_all_recovers_by_itself(
    tmp_path: Path, redis: RedisServer, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="ragwatch.redis"),
        service(tmp_path, redis, fake_openai) as server,
        server.client(auth()) as client,
    ):
        kb_id = create_kb(client, "handbook")
        ingest(client, kb_id, title="Handbook", text=HANDBOOK)
        assert [ask(client, kb_id)["cached"], ask(client, kb_id)["cached"]] == [False, True]
        calls_before = len(fake_openai.calls(CHAT))
        redis.stop()
        during = [client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION}) for _ in range(3)]
        ingested = client.post(documents_url(kb_id), json={"title": "Garden", "text": "Roses bloom in June."})
        readiness = client.get("/health/ready")
        redis_up = metric_total(client, "rag_dependency_up", dependency="redis")
        errors = metric_total(client, "rag_cache_lookups_total", cache="answers", outcome="error")
        redis_errors = metric_total(client, "rag_redis_errors_total")
        calls_during = len(fake_openai.calls(CHAT)) - calls_before
        redis.start()
        recovered = _poll_ready(client)
        # The write made during the outage renews the generation first (within a second); then hits again.
        after = [ask(client, kb_id)]
        deadline = time.monotonic() + 10
        while not after[-1]["cached"] and time.monotonic() < deadline:
            after.append(ask(client, kb_id))
        redis_up_after = metric_total(client, "rag_dependency_up", dependency="redis")

    for reply in during:
        assert reply.status_code == 200, reply.text
        assert reply.json()["cached"] is False
    assert calls_during == 3  # answered afresh, slower but answered
    assert ingested.status_code == 201, ingested.text
    assert readiness.status_code == 200
    assert readiness.json()["checks"]["redis"]["status"] == "degraded"
    assert (redis_up, redis_up_after) == (0, 1)
    assert errors == 3
    assert redis_errors >= 4  # the first failure, then every command skipped while Redis was down
    assert recovered
    assert after[0]["cached"] is False
    assert after[-1]["cached"] is True
    assert {body["answer"] for body in after} == {after[0]["answer"]}
    messages = [record.getMessage() for record in caplog.records if record.name == "ragwatch.redis"]
    assert len([m for m in messages if m.startswith("Redis is unavailable")]) == 1
    assert any(m.startswith("Redis answers again") for m in messages)


def test_a_document_written_while_redis_is_unreachable_is_not_answered_from_the_cache_made_before_it(
    tmp_path: Path, redis: RedisServer, fake_openai: FakeOpenAI
) -> None:
    """Redis keeps its data but stops answering (paused), so the cached answer survives the outage: the
    write's new generation is saved when Redis answers again, before the knowledge base is read from cache."""
    question = "Where is the offsite?"
    with service(tmp_path, redis, fake_openai, RAGWATCH_LLM="extractive") as server, server.client(auth()) as client:
        kb_id = create_kb(client, "events")
        ingest(client, kb_id, title="Parking", text="Parking is free on Fridays.")
        assert [ask(client, kb_id, question)["cached"], ask(client, kb_id, question)["cached"]] == [False, True]
        redis.command("CLIENT", "PAUSE", "3000", "ALL")
        ingest(client, kb_id, id="offsite", title="Offsite", text="The offsite is in Lisbon this year.")
        during = ask(client, kb_id, question)
        recovered = _poll_ready(client)
        after = ask(client, kb_id, question)

    assert "Lisbon" in during["answer"]
    assert recovered
    assert after["cached"] is False
    assert "Lisbon" in after["answer"]


def _poll_ready(client: httpx.Client, timeout_s: float = 15) -> bool:
    """Whether readiness reports Redis ``ok`` again within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.get("/health/ready").json()["checks"]["redis"]["status"] == "ok":
            return True
        time.sleep(0.1)
    return False


def command_calls(redis: RedisServer) -> dict[str, int]:
    """``INFO commandstats``: calls per command (those run inside scripts included)."""
    reply = redis.command("INFO", "commandstats").decode()
    calls = {}
    for line in reply.splitlines():
        if line.startswith("cmdstat_"):
            name, stats = line.removeprefix("cmdstat_").split(":", 1)
            calls[name] = int(stats.split(",")[0].removeprefix("calls="))
    return calls


def test_a_cached_answer_costs_redis_one_script_and_one_read_in_one_round_trip(
    tmp_path: Path, redis: RedisServer, fake_openai: FakeOpenAI
) -> None:
    """The rate limit and the answer cache's read are one EVALSHA: its script reads the answer (one MGET)."""
    with (
        SlowProxy(redis.url, delay_ms=1) as proxy,
        service(tmp_path, redis, fake_openai, RAGWATCH_REDIS_URL=proxy.url) as server,
        server.client(auth()) as client,
    ):
        kb_id = create_kb(client, "handbook")
        ingest(client, kb_id, title="Handbook", text=HANDBOOK)
        assert ask(client, kb_id)["cached"] is False
        time.sleep(0.2)  # past the feedback registry's batch of that answer
        before, writes_before = command_calls(redis), proxy.writes_to_server
        answers = [ask(client, kb_id) for _ in range(10)]
        time.sleep(0.2)  # and of these
        after, writes = command_calls(redis), proxy.writes_to_server - writes_before

    assert [answer["cached"] for answer in answers] == [True] * 10
    spent = {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}
    assert spent.get("evalsha") == 10
    assert spent.get("mget") == 10
    # A hit writes only which answer its trace is (for feedback), batched; active tenants may write one more.
    assert 10 <= spent.get("set", 0) <= 11
    assert "script|exists" not in spent
    # One write per request; a few more from the background: the feedback registry's batches (one per 50 ms
    # at most), active tenants every 5 s, readiness every 15 s.
    assert 10 <= writes <= 10 + 2 + 10
