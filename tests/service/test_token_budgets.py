"""Daily LLM token budgets per tenant, end to end: checked before the provider is called, counted in Redis across
replicas, per-tenant values from the overrides file, visible as metrics (ragwatch over HTTP, the fake LLM)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.fake_openai import CHAT, EMBEDDINGS, FakeOpenAI, fake_openai, openai_env
from tests.support import (
    HANDBOOK,
    RedisServer,
    assert_problem,
    auth,
    create_kb,
    fresh_tenant,
    ingest,
    live_server,
    make_settings,
    metric_total,
    two_replicas,
)

__all__ = ["fake_openai"]  # the fixture, imported for pytest

PER_CALL = 4321 + 87
"""Tokens of each of the fake's completions: its prompt and completion tokens."""
BUDGET = 2 * PER_CALL + 1
"""Two calls fit, the third one starts below the budget and ends above it, the fourth is refused."""


def env(fake: FakeOpenAI, **overrides: str) -> dict[str, str]:
    return openai_env(
        fake.base_url,
        **{
            "RAGWATCH_EMBEDDER": "hashing",
            "RAGWATCH_CACHE_ANSWERS_ENABLED": "false",
            "RAGWATCH_TENANT_TOKEN_BUDGET_PER_DAY": str(BUDGET),
            **overrides,
        },
    )


@contextmanager
def ragwatch(data_dir: Path, fake: FakeOpenAI, tenant: str = "acme", **overrides: str) -> Iterator[httpx.Client]:
    with (
        live_server(make_settings(data_dir, **env(fake, **overrides))) as server,
        server.client(auth(tenant)) as client,
    ):
        yield client


def handbook(client: httpx.Client) -> str:
    kb_id = create_kb(client, "handbook")
    ingest(client, kb_id, title="Handbook", text=HANDBOOK)
    return kb_id


def chat(client: httpx.Client, kb_id: str, question: str = "How many vacation days are paid?") -> httpx.Response:
    return client.post("/v1/chat", json={"kb_id": kb_id, "question": question})


def seconds_to_midnight_utc() -> float:
    now = time.time()
    return (math.floor(now / 86_400) + 1) * 86_400 - now


def test_a_tenant_over_its_daily_budget_is_refused_with_429_until_midnight_and_never_reaches_the_provider(
    fake_openai: FakeOpenAI, data_dir: Path
) -> None:
    with ragwatch(data_dir, fake_openai) as client:
        kb_id = handbook(client)
        statuses = [chat(client, kb_id).status_code for _ in range(3)]
        refused = chat(client, kb_id)
        calls = len(fake_openai.calls(CHAT))
        used = metric_total(client, "rag_tenant_tokens_used", tenant="acme")
        budget = metric_total(client, "rag_tenant_token_budget", tenant="acme")

    assert statuses == [200, 200, 200]
    assert_problem(refused, 429, "budget-exceeded", detail=True)
    assert abs(int(refused.headers["retry-after"]) - seconds_to_midnight_utc()) < 30
    assert calls == 3
    assert (used, budget) == (3 * PER_CALL, BUDGET)


def test_the_budget_is_counted_once_across_replicas_sharing_redis(
    fake_openai: FakeOpenAI, data_dir: Path, redis_server: RedisServer
) -> None:
    tenant = fresh_tenant()
    with two_replicas(data_dir, redis_server.url, tenant, **env(fake_openai)) as (one, other):
        kb_id = handbook(one)
        spent = [chat(client, kb_id).status_code for client in (one, other, one)]
        refused_by_the_other = chat(other, kb_id)

    assert spent == [200, 200, 200]
    assert_problem(refused_by_the_other, 429, "budget-exceeded")
    assert len(fake_openai.calls(CHAT)) == 3


def test_a_tenant_budget_in_the_overrides_file_replaces_the_default(
    fake_openai: FakeOpenAI, data_dir: Path, tmp_path: Path
) -> None:
    overrides = tmp_path / "overrides.json"
    overrides.write_text(
        json.dumps({"big": {"token_budget_per_day": 100 * PER_CALL}, "tiny": {"token_budget_per_day": 1}})
    )
    settings = make_settings(data_dir, **env(fake_openai, RAGWATCH_RATE_LIMIT_OVERRIDES_FILE=str(overrides)))
    with live_server(settings) as server:
        outcomes = {}
        for tenant in ("big", "tiny", "acme"):
            with server.client(auth(tenant)) as client:
                kb_id = handbook(client)
                outcomes[tenant] = [chat(client, kb_id).status_code for _ in range(4)]

    assert outcomes == {"big": [200] * 4, "tiny": [200, 429, 429, 429], "acme": [200, 200, 200, 429]}


def test_answers_already_cached_are_still_served_to_a_tenant_over_budget(
    fake_openai: FakeOpenAI, data_dir: Path
) -> None:
    with ragwatch(data_dir, fake_openai, RAGWATCH_CACHE_ANSWERS_ENABLED="true") as client:
        kb_id = handbook(client)
        first = chat(client, kb_id)
        for number in range(2):
            chat(client, kb_id, f"Is vacation number {number} paid?")
        refused = chat(client, kb_id, "When do unused vacation days expire?")
        cached = chat(client, kb_id)

    assert_problem(refused, 429, "budget-exceeded")
    assert cached.status_code == 200, cached.text
    assert cached.json()["answer"] == first.json()["answer"]


def test_ingestion_over_budget_is_refused_before_any_embedding_call_and_stores_nothing(
    fake_openai: FakeOpenAI, data_dir: Path
) -> None:
    """Embeddings count too: each of the fake's embedding calls is priced by the words it was sent."""
    with ragwatch(
        data_dir, fake_openai, RAGWATCH_EMBEDDER="openai", RAGWATCH_TENANT_TOKEN_BUDGET_PER_DAY="10"
    ) as client:
        kb_id = create_kb(client, "handbook")
        url = f"/v1/knowledge-bases/{kb_id}/documents"
        accepted = client.post(url, json={"title": "Handbook", "text": HANDBOOK})
        calls_before = len(fake_openai.calls(EMBEDDINGS))
        refused = client.post(url, json={"title": "Second", "text": HANDBOOK})
        calls_after = len(fake_openai.calls(EMBEDDINGS))
        documents = client.get(f"/v1/knowledge-bases/{kb_id}").json()["document_count"]

    assert accepted.status_code == 201, accepted.text
    assert_problem(refused, 429, "budget-exceeded")
    assert calls_after == calls_before
    assert documents == 1


def test_without_a_budget_a_tenant_is_never_refused_and_no_budget_series_is_served(
    fake_openai: FakeOpenAI, data_dir: Path
) -> None:
    fake_openai.prompt_tokens = 10**9
    with ragwatch(data_dir, fake_openai, RAGWATCH_TENANT_TOKEN_BUDGET_PER_DAY="") as client:
        kb_id = handbook(client)
        statuses = [chat(client, kb_id).status_code for _ in range(3)]
        metrics = client.get("/metrics").text

    assert statuses == [200, 200, 200]
    assert "rag_tenant_tokens_used" not in metrics.replace("# HELP rag_tenant_tokens_used", "").replace(
        "# TYPE rag_tenant_tokens_used", ""
    )
