"""The round trip a newcomer makes: create a knowledge base, ingest, ask, get a cited answer."""

from __future__ import annotations

import httpx

from tests.support import HANDBOOK


def test_ingest_then_chat_answers_with_citations(admin: httpx.Client, kb_id: str) -> None:
    created = admin.post(f"/v1/knowledge-bases/{kb_id}/documents", json={"title": "Handbook", "text": HANDBOOK})
    assert created.status_code == 201, created.text
    assert created.json()["chunks"] >= 1

    reply = admin.post("/v1/chat", json={"kb_id": kb_id, "question": "How many vacation days do employees get?"})

    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert "twenty-five days" in body["answer"]
    assert "[1]" in body["answer"]
    assert body["model"] == "extractive"
    assert body["citations"][0]["document_id"] == created.json()["document_id"]
    assert body["citations"][0]["title"] == "Handbook"
    assert "twenty-five days" in body["citations"][0]["text"]
    assert body["usage"]["input_tokens"] > 0
    assert body["usage"]["output_tokens"] > 0
