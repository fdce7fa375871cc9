"""Switching embedders: a knowledge base built with the old one answers 409 until it is re-indexed, and
re-indexing keeps every document, page and section while embedding them again (``ragwatch reindex`` too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli import main as ragwatch_cli
from tests.documents import text_pdf
from tests.support import assert_problem, auth, counts, create_kb, documents_url, ingest, live_server, make_settings

HASHING = {"RAGWATCH_EMBEDDER": "hashing"}
WORDLLAMA = {"RAGWATCH_EMBEDDER": "wordllama"}
VACATION = "Every employee gets twenty-five days of paid vacation per year."


def _built_with_hashing(data_dir: Path) -> str:
    """A knowledge base of a text document and a two-page PDF, embedded by the hashing embedder (384 wide)."""
    with live_server(make_settings(data_dir, **HASHING)) as server, server.client(auth()) as client:
        kb_id = create_kb(client, "policies")
        ingest(client, kb_id, title="Leave", text=VACATION, id="leave")
        pdf = text_pdf([["Badges are issued at the front desk."], ["Visitors wear a red lanyard at all times."]])
        uploaded = client.post(documents_url(kb_id), files={"file": ("security.pdf", pdf, "application/pdf")})
        assert uploaded.status_code == 201, uploaded.text
    return kb_id


def test_a_knowledge_base_of_another_embedder_answers_409_naming_the_way_to_reindex(data_dir: Path) -> None:
    kb_id = _built_with_hashing(data_dir)

    with live_server(make_settings(data_dir, **WORDLLAMA)) as server, server.client(auth()) as client:
        refused = client.post("/v1/chat", json={"kb_id": kb_id, "question": "How many vacation days?"})

    assert_problem(refused, 409, "conflict")
    assert f"ragwatch reindex --kb {kb_id}" in refused.json()["detail"]


def test_reindexing_embeds_every_chunk_again_and_keeps_documents_pages_and_sections(data_dir: Path) -> None:
    kb_id = _built_with_hashing(data_dir)

    with live_server(make_settings(data_dir, **WORDLLAMA)) as server, server.client(auth()) as client:
        before = counts(client, kb_id)
        done = client.post(f"/v1/knowledge-bases/{kb_id}/reindex")
        again = client.post(f"/v1/knowledge-bases/{kb_id}/reindex")
        holiday = client.post(f"/v1/knowledge-bases/{kb_id}/search", json={"query": "holiday allowance for staff"})
        lanyard = client.post(f"/v1/knowledge-bases/{kb_id}/search", json={"query": "What do visitors wear?"})
        after = counts(client, kb_id)
        documents = client.get(documents_url(kb_id)).json()["data"]

    assert done.status_code == 200, done.text
    assert done.json() == {
        "kb_id": kb_id,
        "embedding_model": "wordllama-l2-supercat-256",
        "previous_embedding_model": "hashing-384",
        "chunks": before[1],
    }
    assert again.json()["chunks"] == 0  # nothing left to do
    assert after == before
    assert sorted(document["title"] for document in documents) == ["Leave", "security"]
    assert holiday.status_code == 200, holiday.text
    assert holiday.json()["results"][0]["text"] == VACATION  # no shared word: found by the new vectors
    best = lanyard.json()["results"][0]
    assert (best["text"], best["page"]) == ("Visitors wear a red lanyard at all times.", 2)


def test_members_cannot_reindex(data_dir: Path) -> None:
    kb_id = _built_with_hashing(data_dir)

    with live_server(make_settings(data_dir, **WORDLLAMA)) as server, server.client(auth(roles=("member",))) as client:
        refused = client.post(f"/v1/knowledge-bases/{kb_id}/reindex")

    assert_problem(refused, 403, "forbidden")


def test_an_unknown_or_foreign_knowledge_base_is_not_found(data_dir: Path) -> None:
    kb_id = _built_with_hashing(data_dir)

    with live_server(make_settings(data_dir, **WORDLLAMA)) as server, server.client(auth(tenant="globex")) as client:
        foreign = client.post(f"/v1/knowledge-bases/{kb_id}/reindex")
        unknown = client.post("/v1/knowledge-bases/kb-unknown/reindex")

    assert_problem(foreign, 404, "not-found")
    assert_problem(unknown, 404, "not-found")


def test_ragwatch_reindex_does_it_from_the_shell(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kb_id = _built_with_hashing(data_dir)

    with live_server(make_settings(data_dir, **WORDLLAMA)) as server:
        token = auth()["Authorization"].removeprefix("Bearer ")
        status = ragwatch_cli(["reindex", "--kb", kb_id, "--url", server.url, "--token", token])
        again = ragwatch_cli(["reindex", "--kb", kb_id, "--url", server.url, "--token", token])

    printed = capsys.readouterr().out
    assert (status, again) == (0, 0)
    assert "hashing-384 -> wordllama-l2-supercat-256" in printed
    assert "nothing to do" in printed
