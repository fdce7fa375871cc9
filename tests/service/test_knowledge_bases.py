"""Knowledge bases over HTTP: create, list per tenant, counts after ingest, delete with all documents."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import httpx
import lancedb

from service.models import ID_PATTERN
from tests.conftest import ClientFactory
from tests.support import (
    PROBLEM_BASE,
    assert_problem,
    auth,
    counts,
    fresh_tenant,
    ingest,
    live_server,
    make_settings,
    manual,
)


def test_create_returns_201_with_id_name_description_and_creation_time(admin: httpx.Client) -> None:
    response = admin.post("/v1/knowledge-bases", json={"name": "  Employee handbook  ", "description": "HR rules"})

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "name", "description", "created_at"}
    assert re.fullmatch(ID_PATTERN, body["id"])
    assert body["name"] == "Employee handbook"
    assert body["description"] == "HR rules"
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None


def test_description_defaults_to_empty(admin: httpx.Client) -> None:
    response = admin.post("/v1/knowledge-bases", json={"name": "Runbooks"})

    assert response.status_code == 201, response.text
    assert response.json()["description"] == ""


def test_each_create_makes_a_new_knowledge_base_even_with_the_same_name(admin: httpx.Client) -> None:
    first = admin.post("/v1/knowledge-bases", json={"name": "Same"}).json()
    second = admin.post("/v1/knowledge-bases", json={"name": "Same"}).json()

    assert first["id"] != second["id"]


def test_list_holds_exactly_the_callers_tenant_knowledge_bases(client_for: ClientFactory) -> None:
    acme, globex = client_for(fresh_tenant()), client_for(fresh_tenant())
    acme_ids = [acme.post("/v1/knowledge-bases", json={"name": f"acme {i}"}).json()["id"] for i in range(3)]
    globex_id = globex.post("/v1/knowledge-bases", json={"name": "globex"}).json()["id"]

    acme_list = acme.get("/v1/knowledge-bases")
    globex_list = globex.get("/v1/knowledge-bases")

    assert acme_list.status_code == 200
    assert [kb["id"] for kb in acme_list.json()["data"]] == acme_ids
    assert [kb["name"] for kb in acme_list.json()["data"]] == ["acme 0", "acme 1", "acme 2"]
    assert [kb["id"] for kb in globex_list.json()["data"]] == [globex_id]


def test_a_new_tenant_lists_no_knowledge_bases(client_for: ClientFactory) -> None:
    response = client_for(fresh_tenant()).get("/v1/knowledge-bases")

    assert response.status_code == 200
    assert response.json() == {"data": [], "next_cursor": None}


def test_members_can_list_and_read_knowledge_bases(client_for: ClientFactory) -> None:
    tenant = fresh_tenant()
    kb = client_for(tenant).post("/v1/knowledge-bases", json={"name": "shared"}).json()
    member = client_for(tenant, "bob", ("member",))

    assert [item["id"] for item in member.get("/v1/knowledge-bases").json()["data"]] == [kb["id"]]
    assert member.get(f"/v1/knowledge-bases/{kb['id']}").status_code == 200


def test_detail_has_the_fields_and_zero_counts_when_empty(admin: httpx.Client, kb_id: str) -> None:
    response = admin.get(f"/v1/knowledge-bases/{kb_id}")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == kb_id
    assert body["name"] == "handbook"
    assert {"description", "created_at"} <= set(body)
    assert (body["document_count"], body["chunk_count"]) == (0, 0)


def test_detail_counts_are_right_after_ingest_replace_and_delete(admin: httpx.Client, kb_id: str) -> None:
    long_doc = ingest(admin, kb_id, title="Long", text=manual("amber", 12), id="long")
    short_doc = ingest(admin, kb_id, title="Short", text="A single short paragraph.")
    assert long_doc["chunks"] > 3
    assert counts(admin, kb_id) == (2, long_doc["chunks"] + short_doc["chunks"])

    replaced = ingest(admin, kb_id, title="Long", text=manual("cobalt", 4), id="long")
    assert replaced["replaced"] is True
    assert counts(admin, kb_id) == (2, replaced["chunks"] + short_doc["chunks"])

    assert admin.delete(f"/v1/knowledge-bases/{kb_id}/documents/long").status_code == 204
    assert counts(admin, kb_id) == (1, short_doc["chunks"])


def test_counts_of_one_knowledge_base_ignore_the_others(admin: httpx.Client, kb_id: str) -> None:
    other = admin.post("/v1/knowledge-bases", json={"name": "other"}).json()["id"]
    ingest(admin, other, title="Elsewhere", text=manual("elsewhere", 5))
    mine = ingest(admin, kb_id, title="Here", text="Only this one.")

    assert counts(admin, kb_id) == (1, mine["chunks"])


def test_delete_returns_204_then_the_knowledge_base_and_its_documents_are_not_found(
    admin: httpx.Client, kb_id: str
) -> None:
    document = ingest(admin, kb_id, title="Vacation", text="Every employee gets twenty-five vacation days.")
    chat = {"kb_id": kb_id, "question": "How many vacation days?"}
    asked = admin.post("/v1/chat", json=chat)
    assert asked.json()["citations"][0]["document_id"] == document["document_id"]

    deleted = admin.delete(f"/v1/knowledge-bases/{kb_id}")

    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_problem(admin.get(f"/v1/knowledge-bases/{kb_id}"), 404, "not-found")
    assert_problem(admin.get(f"/v1/knowledge-bases/{kb_id}/documents"), 404, "not-found")
    assert_problem(admin.get(f"/v1/knowledge-bases/{kb_id}/documents/{document['document_id']}"), 404, "not-found")
    assert_problem(admin.post("/v1/chat", json=chat), 404, "not-found")
    assert_problem(admin.delete(f"/v1/knowledge-bases/{kb_id}"), 404, "not-found")
    assert kb_id not in [kb["id"] for kb in admin.get("/v1/knowledge-bases").json()["data"]]


def test_deleting_one_knowledge_base_keeps_the_others_searchable(admin: httpx.Client, kb_id: str) -> None:
    keep = admin.post("/v1/knowledge-bases", json={"name": "keep"}).json()["id"]
    ingest(admin, keep, title="Expenses", text="Travel expenses are reimbursed within fourteen days.")
    ingest(admin, kb_id, title="Expenses", text="Travel expenses are reimbursed within fourteen days.")

    assert admin.delete(f"/v1/knowledge-bases/{kb_id}").status_code == 204

    reply = admin.post("/v1/chat", json={"kb_id": keep, "question": "When are travel expenses reimbursed?"})
    assert reply.status_code == 200
    assert "fourteen days" in reply.json()["citations"][0]["text"]
    assert counts(admin, keep) == (1, 1)


def test_delete_removes_every_chunk_of_the_knowledge_base_from_storage(data_dir: Path) -> None:
    """Read the LanceDB table directly after the delete: no row of the knowledge base is left to be found."""
    with live_server(make_settings(data_dir)) as server, server.client(auth()) as client:
        kb_id = client.post("/v1/knowledge-bases", json={"name": "doomed"}).json()["id"]
        kept = client.post("/v1/knowledge-bases", json={"name": "kept"}).json()["id"]
        for index in range(3):
            ingest(client, kb_id, title=f"Doc {index}", text=manual(f"doomed{index}", 4))
        ingest(client, kept, title="Kept", text="Kept text.")
        chunks = lancedb.connect(str(data_dir / "lancedb")).open_table("chunks")
        assert chunks.count_rows(f"kb_id = '{kb_id}'") >= 3

        assert client.delete(f"/v1/knowledge-bases/{kb_id}").status_code == 204

        chunks.checkout_latest()  # type: ignore[no-untyped-call]
        assert chunks.count_rows(f"kb_id = '{kb_id}'") == 0
        assert chunks.count_rows(f"kb_id = '{kept}'") == 1
        assert counts(client, kept) == (1, 1)


def test_members_cannot_create_or_delete_knowledge_bases(client_for: ClientFactory) -> None:
    tenant = fresh_tenant()
    kb_id = client_for(tenant).post("/v1/knowledge-bases", json={"name": "kb"}).json()["id"]
    member = client_for(tenant, "bob", ("member",))

    created = member.post("/v1/knowledge-bases", json={"name": "nope"})
    deleted = member.delete(f"/v1/knowledge-bases/{kb_id}")

    for response in (created, deleted):
        assert response.status_code == 403, response.text
        assert response.json()["type"] == PROBLEM_BASE + "forbidden"
    assert [kb["id"] for kb in member.get("/v1/knowledge-bases").json()["data"]] == [kb_id]
