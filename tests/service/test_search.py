"""``POST /v1/knowledge-bases/{kb_id}/search``: the passages chat would cite, best first, with chat's tenancy,
limits and caching."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ClientFactory
from tests.support import HANDBOOK, PROBLEM_BASE, LiveServer, auth, create_kb, ingest, live_server, make_settings
from tests.support import metric_total as metric

GARDEN = "Tomatoes need six hours of sun. Water the basil every morning. Compost is turned weekly."


def search(client: httpx.Client, kb_id: str, **body: Any) -> httpx.Response:
    return client.post(f"/v1/knowledge-bases/{kb_id}/search", json=body)


@pytest.fixture
def stocked(admin: httpx.Client, kb_id: str) -> str:
    ingest(admin, kb_id, title="Handbook", text=HANDBOOK)
    ingest(admin, kb_id, title="Garden", text=GARDEN)
    for number in range(6):
        ingest(admin, kb_id, title=f"Note {number}", text=f"Vacation note {number}: vacation days are paid.")
    return kb_id


def test_results_are_the_best_passages_first_with_their_documents(admin: httpx.Client, stocked: str) -> None:
    response = search(admin, stocked, query="When do unused vacation days expire?", top_k=3)

    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 3
    assert set(results[0]) == {"document_id", "chunk_id", "title", "score", "text", "created_at"}
    assert results[0]["title"] == "Handbook"
    assert "end of March" in results[0]["text"]
    scores = [result["score"] for result in results]
    assert scores == sorted(scores, reverse=True)


def test_top_k_defaults_to_the_setting_and_is_bounded(admin: httpx.Client, stocked: str) -> None:
    assert len(search(admin, stocked, query="vacation").json()["results"]) == 5
    # Every passage about vacation (the handbook and six notes), not the garden: fewer than top_k exist.
    assert len(search(admin, stocked, query="vacation", top_k=100).json()["results"]) == 7
    for top_k in (0, 101, -1, 2.5, "many"):
        response = search(admin, stocked, query="vacation", top_k=top_k)
        assert response.status_code == 400, response.text
        assert response.json()["type"] == PROBLEM_BASE + "invalid-request"


@pytest.mark.parametrize("body", [{}, {"query": ""}, {"query": "  "}, {"query": "x" * 4001}, {"query": "x", "k": 3}])
def test_a_missing_blank_or_overlong_query_or_an_unknown_field_is_invalid(
    admin: httpx.Client, kb_id: str, body: dict[str, Any]
) -> None:
    assert admin.post(f"/v1/knowledge-bases/{kb_id}/search", json=body).status_code == 400


def test_a_query_that_matches_nothing_finds_nothing(admin: httpx.Client, stocked: str) -> None:
    assert search(admin, stocked, query="Which rocket engine powers Saturn?").json() == {"results": []}


def test_another_tenants_or_an_unknown_knowledge_base_is_not_found(
    client_for: ClientFactory, admin: httpx.Client, stocked: str
) -> None:
    other = client_for("globex", "mallory", ("admin",))

    for client, kb in ((other, stocked), (admin, "kb_missing")):
        response = search(client, kb, query="vacation")
        assert response.status_code == 404
        assert response.json()["type"] == PROBLEM_BASE + "not-found"


def test_a_member_may_search_and_a_caller_without_a_role_may_not(client_for: ClientFactory, stocked: str) -> None:
    assert search(client_for("acme", "bob", ("member",)), stocked, query="vacation").status_code == 200
    assert search(client_for("acme", "eve", ()), stocked, query="vacation").status_code == 403


def test_a_repeated_search_is_served_by_the_retrieval_cache(admin: httpx.Client, stocked: str) -> None:
    query = {"query": "How are travel expenses reimbursed?", "top_k": 4}
    # Passages found while a write settles (RAGWATCH_READ_CONSISTENCY_S, 0.5 s) are not cached, by design.
    time.sleep(0.6)
    first = search(admin, stocked, **query).json()
    hits_before = metric(admin, "rag_cache_lookups_total", cache="retrieval", outcome="hit")

    again = search(admin, stocked, **query).json()

    assert again == first
    assert metric(admin, "rag_cache_lookups_total", cache="retrieval", outcome="hit") == hits_before + 1


@pytest.fixture
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path_factory.mktemp("limited"), RAGWATCH_RATE_LIMIT_PER_MINUTE="2")
    with live_server(settings) as running:
        yield running


def test_searches_are_rate_limited_like_chat(limited: LiveServer) -> None:
    with limited.client(auth()) as client:
        kb_id = create_kb(client, "limited")
        statuses = [search(client, kb_id, query="anything").status_code for _ in range(3)]
        refused = search(client, kb_id, query="anything")

        assert statuses == [200, 200, 429]
        assert "Retry-After" in refused.headers
        assert metric(client, "rag_ratelimit_decisions_total", action="search", outcome="refused") == 2
