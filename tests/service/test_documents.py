"""Documents over HTTP: ingest as JSON or one uploaded file, list, read, delete, and atomic replacement by id."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import datetime
from typing import Any

import httpx
import pytest

from service.models import ID_PATTERN
from tests.conftest import ClientFactory
from tests.support import LiveServer, assert_problem, auth, counts, documents_url, ingest, manual


def citations(client: httpx.Client, kb_id: str, question: str, top_k: int = 20) -> list[dict[str, Any]]:
    response = client.post("/v1/chat", json={"kb_id": kb_id, "question": question, "top_k": top_k})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["citations"]
    return found


# --- ingest ------------------------------------------------------------------------------------------------


def test_json_ingest_returns_201_with_a_generated_id_and_the_chunk_count(admin: httpx.Client, kb_id: str) -> None:
    response = admin.post(documents_url(kb_id), json={"title": "Handbook", "text": manual("amber", 6)})

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"document_id", "chunks", "replaced"}
    assert re.fullmatch(ID_PATTERN, body["document_id"])
    assert body["chunks"] > 1
    assert body["replaced"] is False
    assert counts(admin, kb_id) == (1, body["chunks"])


def test_json_ingest_keeps_the_given_id_title_text_and_metadata(admin: httpx.Client, kb_id: str) -> None:
    text = "Vacation policy.\n\nEvery employee gets twenty-five days of paid vacation per year. Ünïcødé ✓."
    metadata = {"source": "hr", "version": 3, "tags": ["policy", "hr"], "nested": {"ok": True}}

    created = ingest(admin, kb_id, title="  Vacation  ", text=text, metadata=metadata, id="vacation-2024.v1")
    detail = admin.get(f"{documents_url(kb_id)}/vacation-2024.v1")

    assert created == {"document_id": "vacation-2024.v1", "chunks": 1, "replaced": False}
    assert detail.status_code == 200
    body = detail.json()
    assert body["document_id"] == "vacation-2024.v1"
    assert body["title"] == "Vacation"
    assert body["text"] == text
    assert body["metadata"] == metadata
    assert body["chunks"] == 1
    assert body["bytes"] == len(text.encode())
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None


def test_a_text_file_upload_is_ingested_with_its_form_fields(admin: httpx.Client, kb_id: str) -> None:
    text = "Expense policy.\n\nTravel expenses are reimbursed within fourteen days when receipts are attached.\n"

    response = admin.post(
        documents_url(kb_id),
        files={"file": ("expenses.txt", text.encode(), "text/plain")},
        data={"title": "Expenses", "id": "expenses", "metadata": json.dumps({"owner": "finance"})},
    )

    assert response.status_code == 201, response.text
    assert response.json() == {"document_id": "expenses", "chunks": 1, "replaced": False}
    body = admin.get(f"{documents_url(kb_id)}/expenses").json()
    assert (body["title"], body["text"], body["metadata"]) == ("Expenses", text, {"owner": "finance"})
    reply = citations(admin, kb_id, "When are travel expenses reimbursed?")
    assert reply[0]["document_id"] == "expenses"


def test_a_markdown_upload_without_a_title_is_titled_after_its_file_name(admin: httpx.Client, kb_id: str) -> None:
    text = "# On-call\n\nThe on-call engineer answers pages within fifteen minutes."

    response = admin.post(documents_url(kb_id), files={"file": ("on-call.md", text.encode(), "text/markdown")})

    assert response.status_code == 201, response.text
    body = admin.get(f"{documents_url(kb_id)}/{response.json()['document_id']}").json()
    assert body["title"] == "on-call"
    assert body["text"] == text
    assert body["metadata"] == {}


def test_a_utf8_byte_order_mark_is_not_part_of_an_uploaded_text(admin: httpx.Client, kb_id: str) -> None:
    response = admin.post(documents_url(kb_id), files={"file": ("bom.txt", b"\xef\xbb\xbfHello there.", "text/plain")})

    assert response.status_code == 201, response.text
    assert admin.get(f"{documents_url(kb_id)}/{response.json()['document_id']}").json()["text"] == "Hello there."


# --- list, read, delete --------------------------------------------------------------------------------------


def test_list_shows_every_document_without_its_text(admin: httpx.Client, kb_id: str) -> None:
    first = ingest(admin, kb_id, title="First", text="One.", metadata={"n": 1})
    second = ingest(admin, kb_id, title="Second", text=manual("amber", 5))

    response = admin.get(documents_url(kb_id))

    assert response.status_code == 200
    listed = response.json()["data"]
    assert response.json()["next_cursor"] is None
    assert [d["document_id"] for d in listed] == [first["document_id"], second["document_id"]]
    assert [d["title"] for d in listed] == ["First", "Second"]
    assert [d["chunks"] for d in listed] == [first["chunks"], second["chunks"]]
    assert listed[0]["metadata"] == {"n": 1}
    assert all(set(d) == {"document_id", "title", "chunks", "bytes", "metadata", "created_at"} for d in listed)


def test_an_empty_knowledge_base_lists_no_documents(admin: httpx.Client, kb_id: str) -> None:
    response = admin.get(documents_url(kb_id))

    assert response.status_code == 200
    assert response.json() == {"data": [], "next_cursor": None}


def test_members_can_read_but_not_ingest_or_delete(client_for: ClientFactory, admin: httpx.Client, kb_id: str) -> None:
    ingest(admin, kb_id, title="Doc", text="Readable by members.", id="doc")
    member = client_for("acme", "bob", ("member",))

    assert member.get(f"{documents_url(kb_id)}/doc").status_code == 200
    assert member.post(documents_url(kb_id), json={"title": "x", "text": "y"}).status_code == 403
    assert member.delete(f"{documents_url(kb_id)}/doc").status_code == 403
    assert counts(admin, kb_id) == (1, 1)


def test_delete_returns_204_then_the_document_is_gone_everywhere(admin: httpx.Client, kb_id: str) -> None:
    ingest(admin, kb_id, title="Vacation", text="Every employee gets twenty-five vacation days.", id="vacation")
    keep = ingest(admin, kb_id, title="Expenses", text="Travel expenses are reimbursed within fourteen days.")

    deleted = admin.delete(f"{documents_url(kb_id)}/vacation")

    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_problem(admin.get(f"{documents_url(kb_id)}/vacation"), 404, "not-found")
    assert_problem(admin.delete(f"{documents_url(kb_id)}/vacation"), 404, "not-found")
    assert [d["document_id"] for d in admin.get(documents_url(kb_id)).json()["data"]] == [keep["document_id"]]
    assert all(c["document_id"] != "vacation" for c in citations(admin, kb_id, "How many vacation days?"))
    assert counts(admin, kb_id) == (1, keep["chunks"])


def test_an_unknown_document_is_not_found(admin: httpx.Client, kb_id: str) -> None:
    assert_problem(admin.get(f"{documents_url(kb_id)}/never-ingested"), 404, "not-found")
    assert_problem(admin.delete(f"{documents_url(kb_id)}/never-ingested"), 404, "not-found")


def test_documents_of_an_unknown_knowledge_base_are_not_found(admin: httpx.Client) -> None:
    assert_problem(admin.get(documents_url("kb_unknown")), 404, "not-found")
    assert_problem(admin.post(documents_url("kb_unknown"), json={"title": "t", "text": "x"}), 404, "not-found")
    assert_problem(admin.get(f"{documents_url('kb_unknown')}/doc"), 404, "not-found")
    assert_problem(admin.delete(f"{documents_url('kb_unknown')}/doc"), 404, "not-found")


# --- replacement ---------------------------------------------------------------------------------------------


def test_resending_an_id_replaces_the_document_without_duplicating_chunks(admin: httpx.Client, kb_id: str) -> None:
    old = ingest(admin, kb_id, title="Manual", text=manual("amberwolf", 10), id="manual")
    assert old["replaced"] is False
    assert old["chunks"] > 3

    new = ingest(admin, kb_id, title="Manual v2", text=manual("bluefalcon", 3), id="manual", metadata={"v": 2})

    assert new["document_id"] == "manual"
    assert new["replaced"] is True
    assert 0 < new["chunks"] < old["chunks"]
    assert counts(admin, kb_id) == (1, new["chunks"])
    detail = admin.get(f"{documents_url(kb_id)}/manual").json()
    assert (detail["title"], detail["text"], detail["metadata"]) == ("Manual v2", manual("bluefalcon", 3), {"v": 2})
    assert [d["document_id"] for d in admin.get(documents_url(kb_id)).json()["data"]] == ["manual"]
    found = citations(admin, kb_id, "amberwolf bluefalcon harbour crane scheduling")
    assert len(found) == new["chunks"]
    assert all("bluefalcon" in c["text"] and "amberwolf" not in c["text"] for c in found)
    assert len({c["chunk_id"] for c in found}) == len(found)


def test_replacing_with_more_chunks_also_leaves_exactly_the_new_ones(admin: httpx.Client, kb_id: str) -> None:
    ingest(admin, kb_id, title="Manual", text=manual("amberwolf", 2), id="manual")

    new = ingest(admin, kb_id, title="Manual", text=manual("bluefalcon", 9), id="manual")

    assert new["replaced"] is True
    assert counts(admin, kb_id) == (1, new["chunks"])
    found = citations(admin, kb_id, "harbour crane scheduling amberwolf", top_k=50)
    assert len(found) == new["chunks"]
    assert not any("amberwolf" in c["text"] for c in found)


def test_an_upload_with_an_existing_id_replaces_it(admin: httpx.Client, kb_id: str) -> None:
    ingest(admin, kb_id, title="Notes", text=manual("amberwolf", 6), id="notes")

    response = admin.post(
        documents_url(kb_id),
        files={"file": ("notes.md", b"Short bluefalcon notes.", "text/markdown")},
        data={"id": "notes"},
    )

    assert response.status_code == 201, response.text
    assert response.json() == {"document_id": "notes", "chunks": 1, "replaced": True}
    assert counts(admin, kb_id) == (1, 1)
    assert admin.get(f"{documents_url(kb_id)}/notes").json()["text"] == "Short bluefalcon notes."


def test_the_same_id_in_two_knowledge_bases_names_two_documents(admin: httpx.Client, kb_id: str) -> None:
    other = admin.post("/v1/knowledge-bases", json={"name": "other"}).json()["id"]
    ingest(admin, kb_id, title="A", text="Text in the first base.", id="shared")

    created = ingest(admin, other, title="B", text="Text in the second base.", id="shared")

    assert created["replaced"] is False
    assert admin.get(f"{documents_url(kb_id)}/shared").json()["text"] == "Text in the first base."
    assert admin.get(f"{documents_url(other)}/shared").json()["text"] == "Text in the second base."


def test_concurrent_writers_of_one_id_leave_exactly_one_version(
    server: LiveServer, admin: httpx.Client, kb_id: str
) -> None:
    versions = {f"writer{n}": manual(f"writer{n}mark", 2 + n) for n in range(4)}
    statuses: list[int] = []

    def write(text: str) -> None:
        with server.client(auth()) as client:
            for _ in range(3):
                response = client.post(documents_url(kb_id), json={"title": "Race", "text": text, "id": "race"})
                statuses.append(response.status_code)

    threads = [threading.Thread(target=write, args=(text,)) for text in versions.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [201] * 12
    final = admin.get(f"{documents_url(kb_id)}/race").json()
    assert final["text"] in versions.values()
    assert counts(admin, kb_id) == (1, final["chunks"])
    marker = next(name for name, text in versions.items() if text == final["text"])
    found = citations(admin, kb_id, "harbour crane scheduling berth allocation", top_k=50)
    assert len(found) == final["chunks"]
    assert all(f"{marker}mark" in c["text"] for c in found)


def test_search_sees_either_all_old_or_all_new_chunks_while_a_document_is_replaced(
    server: LiveServer, admin: httpx.Client, kb_id: str
) -> None:
    """Version A (amberwolf) and B (bluefalcon) have different chunk counts. One thread swaps them back and
    forth while others ask a question every chunk of both answers; each answer must cite exactly the full
    chunk set of one version: never a mix of both, never none."""
    question = "harbour crane scheduling berth allocation rules"
    text_a, text_b = manual("amberwolf", 4), manual("bluefalcon", 9)
    chunk_sets: dict[str, frozenset[str]] = {}
    for name, text in (("A", text_a), ("B", text_b)):
        written = ingest(admin, kb_id, title="Manual", text=text, id="manual")
        chunk_sets[name] = frozenset(c["text"] for c in citations(admin, kb_id, question))
        assert len(chunk_sets[name]) == written["chunks"], "every chunk of a version must answer the question"
    assert len(chunk_sets["A"]) != len(chunk_sets["B"])

    writing = threading.Event()
    writing.set()
    write_statuses: list[int] = []
    observed: list[tuple[frozenset[str], frozenset[str], frozenset[str]]] = []
    failures: list[str] = []

    def writer() -> None:
        with server.client(auth()) as client:
            deadline = time.monotonic() + 2.5
            round_ = 0
            while time.monotonic() < deadline or round_ < 20:
                text = text_a if round_ % 2 == 0 else text_b
                response = client.post(documents_url(kb_id), json={"title": "Manual", "text": text, "id": "manual"})
                write_statuses.append(response.status_code)
                round_ += 1
        writing.clear()

    def reader() -> None:
        with server.client(auth()) as client:
            while writing.is_set():
                response = client.post("/v1/chat", json={"kb_id": kb_id, "question": question, "top_k": 20})
                if response.status_code != 200:
                    failures.append(response.text)
                    continue
                cited = response.json()["citations"]
                observed.append(
                    (
                        frozenset(c["text"] for c in cited),
                        frozenset(c["chunk_id"] for c in cited),
                        frozenset(c["document_id"] for c in cited),
                    )
                )

    threads = [threading.Thread(target=writer), *(threading.Thread(target=reader) for _ in range(6))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert set(write_statuses) == {201}
    assert len(observed) >= 50
    for texts, chunk_ids, document_ids in observed:
        mix = {marker: sum(marker in text for text in texts) for marker in ("amberwolf", "bluefalcon")}
        assert texts in (chunk_sets["A"], chunk_sets["B"]), f"a search saw a mix of versions, or nothing: {mix}"
        assert document_ids == {"manual"}
        assert len(chunk_ids) == len(texts)
    seen = {texts for texts, _, _ in observed}
    assert seen == {chunk_sets["A"], chunk_sets["B"]}, "the searches never overlapped a replacement"
    final = chunk_sets["B"] if len(write_statuses) % 2 == 0 else chunk_sets["A"]
    assert counts(admin, kb_id) == (1, len(final))


@pytest.mark.parametrize("top_k", [1, 3])
def test_chat_cites_at_most_top_k_chunks(admin: httpx.Client, kb_id: str, top_k: int) -> None:
    ingest(admin, kb_id, title="Manual", text=manual("amberwolf", 10))

    assert len(citations(admin, kb_id, "harbour crane scheduling", top_k=top_k)) == top_k
