"""Tenant isolation: another tenant's ids, and crafted ids on every route, never reach foreign data.

Tenant A owns a knowledge base with a document holding a secret phrase. Tenant B, an admin of its own
tenant, tries every route with A's real ids and with crafted ones (SQL fragments, LIKE wildcards, quotes,
unicode, very long ids). Every answer is a 4xx problem, never a 500, never A's data; A's data is intact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import ClientFactory
from tests.support import CRAFTED_IDS, PROBLEM_BASE, fresh_tenant

SECRET = "The vault combination is orchid-seven-lantern."
QUESTION = "What is the vault combination?"
NON_EMPTY_CRAFTED_IDS = [crafted for crafted in CRAFTED_IDS if crafted]
"""Less the empty id, which reaches no lookup: as a path segment it names another route (``/v1/knowledge-bases/``
is the list) and as an upload's form field it means "no id given"."""


@dataclass(frozen=True)
class TenantData:
    client: httpx.Client
    kb_id: str
    document_id: str
    chunks: int


def is_problem(response: httpx.Response, *statuses: int) -> bool:
    return (
        response.status_code in statuses
        and response.headers["content-type"].startswith("application/problem+json")
        and {"type", "title", "status", "detail"} <= set(response.json())
    )


@pytest.fixture
def tenant_a(client_for: ClientFactory) -> TenantData:
    client = client_for(fresh_tenant(), "alice", ("admin",))
    kb_id = client.post("/v1/knowledge-bases", json={"name": "vault"}).json()["id"]
    created = client.post(
        f"/v1/knowledge-bases/{kb_id}/documents",
        json={"title": "Vault", "text": SECRET, "id": "vault-doc", "metadata": {"owner": "a"}},
    ).json()
    return TenantData(client, kb_id, created["document_id"], created["chunks"])


@pytest.fixture
def tenant_b(client_for: ClientFactory) -> httpx.Client:
    client = client_for(fresh_tenant(), "mallory", ("admin", "member"))
    client.post("/v1/knowledge-bases", json={"name": "mallory's own"})
    return client


def assert_intact(a: TenantData) -> None:
    """A's knowledge base, document and search answer are exactly as they were."""
    detail = a.client.get(f"/v1/knowledge-bases/{a.kb_id}")
    assert detail.status_code == 200
    assert (detail.json()["document_count"], detail.json()["chunk_count"]) == (1, a.chunks)
    document = a.client.get(f"/v1/knowledge-bases/{a.kb_id}/documents/{a.document_id}").json()
    assert (document["title"], document["text"], document["metadata"]) == ("Vault", SECRET, {"owner": "a"})
    reply = a.client.post("/v1/chat", json={"kb_id": a.kb_id, "question": QUESTION})
    assert [c["document_id"] for c in reply.json()["citations"]] == [a.document_id]


def foreign_requests(kb_id: str, document_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every route, aimed at the given knowledge base and document ids."""
    kb, doc = quote(kb_id, safe=""), quote(document_id, safe="")
    return [
        ("GET", f"/v1/knowledge-bases/{kb}", {}),
        ("DELETE", f"/v1/knowledge-bases/{kb}", {}),
        ("GET", f"/v1/knowledge-bases/{kb}/documents", {}),
        ("POST", f"/v1/knowledge-bases/{kb}/documents", {"json": {"title": "Injected", "text": "pwned"}}),
        (
            "POST",
            f"/v1/knowledge-bases/{kb}/documents",
            {"json": {"title": "Overwrite", "text": "pwned", "id": "vault-doc"}},
        ),
        (
            "POST",
            f"/v1/knowledge-bases/{kb}/documents",
            {"files": {"file": ("x.txt", b"pwned", "text/plain")}, "data": {"id": "vault-doc"}},
        ),
        ("GET", f"/v1/knowledge-bases/{kb}/documents/{doc}", {}),
        ("DELETE", f"/v1/knowledge-bases/{kb}/documents/{doc}", {}),
        ("POST", "/v1/chat", {"json": {"kb_id": kb_id, "question": QUESTION}}),
        ("POST", "/v1/chat", {"json": {"kb_id": kb_id, "question": QUESTION, "stream": True}}),
    ]


def test_another_tenant_gets_404_on_every_route_for_real_ids(tenant_a: TenantData, tenant_b: httpx.Client) -> None:
    for method, url, options in foreign_requests(tenant_a.kb_id, tenant_a.document_id):
        response = tenant_b.request(method, url, **options)

        assert is_problem(response, 404), (method, url, response.status_code, response.text)
        assert response.json()["type"] == PROBLEM_BASE + "not-found"
        assert "orchid" not in response.text

    assert_intact(tenant_a)


def test_another_tenant_never_lists_foreign_knowledge_bases(tenant_a: TenantData, tenant_b: httpx.Client) -> None:
    listed = tenant_b.get("/v1/knowledge-bases").json()["data"]

    assert [kb["name"] for kb in listed] == ["mallory's own"]
    assert tenant_a.kb_id not in {kb["id"] for kb in listed}


def test_the_same_user_name_in_another_tenant_sees_nothing(tenant_a: TenantData, client_for: ClientFactory) -> None:
    namesake = client_for(fresh_tenant(), "alice", ("admin",))

    assert namesake.get("/v1/knowledge-bases").json()["data"] == []
    assert namesake.get(f"/v1/knowledge-bases/{tenant_a.kb_id}").status_code == 404
    assert_intact(tenant_a)


@pytest.mark.parametrize("crafted", NON_EMPTY_CRAFTED_IDS)
def test_crafted_ids_get_a_4xx_problem_and_never_foreign_data(
    crafted: str, tenant_a: TenantData, tenant_b: httpx.Client
) -> None:
    targets = [
        (crafted, tenant_a.document_id),  # crafted knowledge base id
        (tenant_a.kb_id, crafted),  # A's knowledge base, crafted document id
        (tenant_a.kb_id + crafted, tenant_a.document_id + crafted),  # A's ids with a tail
    ]
    for kb_id, document_id in targets:
        for method, url, options in foreign_requests(kb_id, document_id):
            response = tenant_b.request(method, url, **options)

            assert is_problem(response, 400, 404, 422), (method, url, response.status_code, response.text)
            assert "orchid" not in response.text

    assert_intact(tenant_a)


@pytest.mark.parametrize("crafted", NON_EMPTY_CRAFTED_IDS)
def test_crafted_ids_in_the_owners_own_requests_are_refused_without_harm(crafted: str, tenant_a: TenantData) -> None:
    """Even the owner cannot reach past its own rows with a crafted id, nor delete by wildcard."""
    for method, url, options in foreign_requests(crafted, crafted):
        response = tenant_a.client.request(method, url, **options)

        assert is_problem(response, 400, 404, 422), (method, url, response.status_code, response.text)

    own_document = f"/v1/knowledge-bases/{tenant_a.kb_id}/documents/{quote(crafted, safe='')}"
    assert is_problem(tenant_a.client.get(own_document), 404)
    assert is_problem(tenant_a.client.delete(own_document), 404)

    assert_intact(tenant_a)


@pytest.mark.parametrize("crafted", NON_EMPTY_CRAFTED_IDS)
def test_a_crafted_document_id_in_the_body_is_refused_and_nothing_is_stored(crafted: str, tenant_a: TenantData) -> None:
    url = f"/v1/knowledge-bases/{tenant_a.kb_id}/documents"

    as_json = tenant_a.client.post(url, json={"title": "Injected", "text": "pwned", "id": crafted})
    as_form = tenant_a.client.post(url, files={"file": ("x.txt", b"pwned", "text/plain")}, data={"id": crafted})

    for response in (as_json, as_form):
        assert is_problem(response, 400, 422), (response.status_code, response.text)
        assert response.json()["type"] == PROBLEM_BASE + "invalid-request"
    assert [d["document_id"] for d in tenant_a.client.get(url).json()["data"]] == [tenant_a.document_id]
    assert_intact(tenant_a)


@pytest.mark.parametrize("crafted", CRAFTED_IDS)
def test_a_crafted_kb_id_in_chat_is_refused_as_invalid(crafted: str, tenant_a: TenantData) -> None:
    response = tenant_a.client.post("/v1/chat", json={"kb_id": crafted, "question": QUESTION})

    assert is_problem(response, 400, 422), (response.status_code, response.text)
    assert response.json()["type"] == PROBLEM_BASE + "invalid-request"
    assert "orchid" not in response.text


def test_a_well_formed_but_unknown_kb_id_in_chat_is_not_found(tenant_a: TenantData) -> None:
    response = tenant_a.client.post("/v1/chat", json={"kb_id": "kb_0000000000000000000", "question": QUESTION})

    assert is_problem(response, 404)
