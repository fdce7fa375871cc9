"""``POST /v1/chat`` with the offline defaults: cited answers, and a fixed answer when nothing is relevant."""

from __future__ import annotations

import re

import httpx

from service.providers import NO_ANSWER
from tests.conftest import ClientFactory
from tests.support import HANDBOOK, PROBLEM_BASE, ingest

GARDEN = "Tomatoes need six hours of sun. Water the basil every morning. Compost is turned weekly."


def test_chat_answers_from_the_passages_and_cites_them(admin: httpx.Client, kb_id: str) -> None:
    handbook = ingest(admin, kb_id, title="Handbook", text=HANDBOOK)["document_id"]
    ingest(admin, kb_id, title="Garden", text=GARDEN)

    reply = admin.post("/v1/chat", json={"kb_id": kb_id, "question": "When do unused vacation days expire?"})

    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert set(body) == {
        "answer",
        "citations",
        "model",
        "usage",
        "trace_id",
        "cached",
        "finish_reason",
        "conversation_id",
    }
    assert body["cached"] is False
    assert "end of March" in body["answer"]
    markers = {int(n) for n in re.findall(r"\[(\d+)\]", body["answer"])}
    assert markers, body["answer"]
    assert max(markers) <= len(body["citations"])
    for number in markers:
        cited = body["citations"][number - 1]
        assert cited["document_id"] == handbook
        assert cited["chunk_id"]
    scores = [citation["score"] for citation in body["citations"]]
    assert scores == sorted(scores, reverse=True)
    assert all(0 < score <= 1 for score in scores)
    assert re.fullmatch(r"[0-9a-f]{32}", body["trace_id"])


def test_top_k_bounds_the_number_of_citations(admin: httpx.Client, kb_id: str) -> None:
    for number in range(4):
        text = f"Vacation rule {number}: vacation days are paid, case {number}."
        ingest(admin, kb_id, title=f"Policy {number}", text=text)

    reply = admin.post("/v1/chat", json={"kb_id": kb_id, "question": "Are vacation days paid?", "top_k": 2})

    assert reply.status_code == 200, reply.text
    assert len(reply.json()["citations"]) == 2


def test_a_question_the_knowledge_base_does_not_cover_gets_the_fixed_answer_without_citations(
    admin: httpx.Client, kb_id: str
) -> None:
    ingest(admin, kb_id, title="Handbook", text=HANDBOOK)

    for question in ("Which rocket engine powers Saturn?", "What is the capital of Mongolia?"):
        reply = admin.post("/v1/chat", json={"kb_id": kb_id, "question": question})

        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["answer"] == NO_ANSWER, question
        assert body["citations"] == [], question
        assert body["model"] == "extractive"


def test_an_empty_knowledge_base_gets_the_fixed_answer_and_spends_no_tokens(admin: httpx.Client, kb_id: str) -> None:
    reply = admin.post("/v1/chat", json={"kb_id": kb_id, "question": "How many vacation days do employees get?"})

    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["answer"] == NO_ANSWER
    assert body["citations"] == []
    assert body["usage"] == {"input_tokens": 0, "output_tokens": 0}


def test_chat_on_an_unknown_knowledge_base_is_a_not_found_problem(admin: httpx.Client) -> None:
    reply = admin.post("/v1/chat", json={"kb_id": "kb_does_not_exist", "question": "Anything?"})

    assert reply.status_code == 404
    assert reply.headers["content-type"].startswith("application/problem+json")
    assert reply.json()["type"] == PROBLEM_BASE + "not-found"


def test_another_tenants_knowledge_base_is_as_unknown_as_a_missing_one(
    kb_id: str, admin: httpx.Client, client_for: ClientFactory
) -> None:
    ingest(admin, kb_id, title="Handbook", text=HANDBOOK)
    outsider = client_for("globex", "mallory", ("admin",))

    reply = outsider.post("/v1/chat", json={"kb_id": kb_id, "question": "How many vacation days?"})

    assert reply.status_code == 404
    assert "twenty-five" not in reply.text


def test_invalid_chat_requests_are_bad_request_problems(admin: httpx.Client, kb_id: str) -> None:
    for body in (
        {"kb_id": kb_id, "question": "   "},
        {"kb_id": kb_id},
        {"kb_id": kb_id, "question": "Why?", "top_k": 0},
        {"kb_id": kb_id, "question": "Why?", "temperature": 2},
        {"kb_id": "bad id'; --", "question": "Why?"},
    ):
        reply = admin.post("/v1/chat", json=body)

        assert reply.status_code == 400, (body, reply.text)
        assert reply.json()["type"] == PROBLEM_BASE + "invalid-request"


def test_an_answer_over_two_documents_never_repeats_a_sentence(admin: httpx.Client, kb_id: str) -> None:
    ingest(admin, kb_id, title="Vault (2025)", text="The vault code of tenant A is 7741.")
    ingest(
        admin,
        kb_id,
        title="Vault (2026)",
        text="The vault code of tenant A is 7741. That was last year: the vault code is now 5150.",
    )

    answer = admin.post("/v1/chat", json={"kb_id": kb_id, "question": "What is the vault code?"}).json()["answer"]

    sentences = [sentence.strip() for sentence in re.split(r"(?:\s*\[\d+\])+", answer) if sentence.strip()]
    assert len(sentences) == len(set(sentences)), answer
    assert "5150" in answer
