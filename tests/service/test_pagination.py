"""The list routes page with ``limit`` and an opaque ``cursor``: every item exactly once, oldest first."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import ClientFactory
from tests.support import assert_problem, create_kb, documents_url, fresh_tenant, ingest

INVALID = "invalid-request"


def all_pages(client: httpx.Client, url: str, limit: int, cursor: str | None = None) -> list[list[dict[str, Any]]]:
    """Every page of ``url`` from ``cursor`` on, ``limit`` items at a time, following ``next_cursor`` until
    it is null."""
    pages: list[list[dict[str, Any]]] = []
    params: dict[str, str | int] = {"limit": limit} | ({"cursor": cursor} if cursor else {})
    while True:
        response = client.get(url, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["data"])
        if body["next_cursor"] is None:
            return pages
        params = {"limit": limit, "cursor": body["next_cursor"]}


def create_in_order(client: httpx.Client, count: int) -> list[str]:
    """Ids of ``count`` new knowledge bases in list order: creation time, then id (two may share a millisecond)."""
    bodies = [client.post("/v1/knowledge-bases", json={"name": f"kb {n}"}).json() for n in range(count)]
    return [body["id"] for body in sorted(bodies, key=lambda body: (body["created_at"], body["id"]))]


def test_knowledge_bases_come_a_page_at_a_time_each_exactly_once_oldest_first(client_for: ClientFactory) -> None:
    admin = client_for(fresh_tenant())
    created = create_in_order(admin, 7)

    pages = all_pages(admin, "/v1/knowledge-bases", limit=3)

    assert [len(page) for page in pages] == [3, 3, 1]
    assert [kb["id"] for page in pages for kb in page] == created


def test_a_list_that_fills_its_last_page_exactly_ends_with_an_empty_cursor(client_for: ClientFactory) -> None:
    admin = client_for(fresh_tenant())
    created = create_in_order(admin, 4)

    pages = all_pages(admin, "/v1/knowledge-bases", limit=2)

    assert [[kb["id"] for kb in page] for page in pages] == [created[:2], created[2:]]


def test_documents_come_a_page_at_a_time_and_a_page_survives_deletions_before_it(admin: httpx.Client) -> None:
    kb_id = create_kb(admin, "paged documents")
    ingest_all = [ingest(admin, kb_id, title=f"Doc {n}", text=f"Document number {n}.") for n in range(5)]
    listed_once = admin.get(documents_url(kb_id)).json()["data"]
    ids = [d["document_id"] for d in listed_once]
    assert sorted(ids) == sorted(d["document_id"] for d in ingest_all)

    first = admin.get(documents_url(kb_id), params={"limit": 2}).json()
    admin.delete(f"{documents_url(kb_id)}/{ids[0]}").raise_for_status()  # an item already seen goes away
    rest = all_pages(admin, documents_url(kb_id), limit=2, cursor=first["next_cursor"])

    assert [d["document_id"] for d in first["data"]] == ids[:2]
    assert [d["document_id"] for page in rest for d in page] == ids[2:]


def test_without_limit_a_page_holds_up_to_100(admin: httpx.Client) -> None:
    kb_id = create_kb(admin, "default page")
    ingest(admin, kb_id, title="Only", text="One document.")

    body = admin.get(documents_url(kb_id)).json()

    assert len(body["data"]) == 1
    assert body["next_cursor"] is None


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "ten"])
def test_a_limit_outside_1_to_1000_is_invalid(admin: httpx.Client, limit: str) -> None:
    assert_problem(admin.get("/v1/knowledge-bases", params={"limit": limit}), 400, INVALID)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


FORGED: list[tuple[str, Callable[[], str]]] = [
    ("not base64", lambda: "%%%"),
    ("not json", lambda: _b64(b"hello")),
    ("wrong shape", lambda: _b64(b'{"created_at": "x"}')),
    ("injected id", lambda: _b64(b'["2026-01-01T00:00:00.000+00:00", "x\' OR 1=1 --"]')),
    ("injected time", lambda: _b64(b"[\"2026' OR '1'='1\", \"kb_1\"]")),
]


@pytest.mark.parametrize("forged", [f[1] for f in FORGED], ids=[f[0] for f in FORGED])
def test_a_cursor_this_service_did_not_hand_out_is_a_400(client_for: ClientFactory, forged: Callable[[], str]) -> None:
    admin = client_for(fresh_tenant())
    kb_id = create_kb(admin, "cursor target")

    for url in ("/v1/knowledge-bases", documents_url(kb_id)):
        response = admin.get(url, params={"cursor": forged()})
        assert_problem(response, 400, INVALID)
