"""The composition root builds the whole object graph from settings, without an HTTP server: built with no
I/O at all, then started on real LanceDB and used through its services."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service.auth import ADMIN, MEMBER, Principal
from service.chat import AnswerDelta, AnswerDone
from service.container import build_container
from service.documents import NewDocument
from service.models import ChatRequest, KnowledgeBaseCreate
from telemetry import disabled_telemetry
from tests.support import HANDBOOK, make_settings

ALICE = Principal(tenant_id="acme", user_id="alice", roles=frozenset({ADMIN, MEMBER}))


def test_building_the_graph_touches_nothing_on_disk(tmp_path: Path) -> None:
    data = tmp_path / "data"

    container = build_container(make_settings(data), telemetry=disabled_telemetry())

    assert not data.exists()
    assert container.limiter is not None
    assert container.shared.redis is None  # memory:// by default


def test_a_switched_off_rate_limiter_is_not_built(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, RAGWATCH_RATE_LIMIT_ENABLED="false")

    assert build_container(settings, telemetry=disabled_telemetry()).limiter is None


async def test_a_started_graph_ingests_and_answers_whole_and_streamed(tmp_path: Path) -> None:
    container = build_container(make_settings(tmp_path), telemetry=disabled_telemetry())
    await container.start()
    try:
        kb = (await container.knowledge_bases.create(ALICE, KnowledgeBaseCreate(name="handbook"))).value
        created = await container.documents.write(ALICE, kb.id, NewDocument("Handbook", HANDBOOK, {}))
        question = await container.chat.question(
            ALICE, ChatRequest(kb_id=kb.id, question="How many vacation days do employees get?")
        )

        whole = await container.chat.answer(ALICE, question)
        events = [event async for event in container.chat.events(ALICE, question)]
        detail = await container.knowledge_bases.detail(ALICE, kb.id)
    finally:
        await container.aclose()

    assert created.chunks >= 1
    assert "twenty-five days" in whole.answer
    assert not whole.cached
    assert [type(event) for event in events] == [AnswerDelta, AnswerDone]
    assert isinstance(events[-1], AnswerDone)
    assert events[-1].cached
    assert (detail.document_count, detail.chunk_count) == (1, created.chunks)


async def test_a_container_is_started_once(tmp_path: Path) -> None:
    container = build_container(make_settings(tmp_path), telemetry=disabled_telemetry())
    await container.start()
    try:
        with pytest.raises(RuntimeError, match="started once"):
            await container.start()
    finally:
        await container.aclose()


async def test_a_start_that_fails_closes_what_it_had_built_and_says_why(tmp_path: Path) -> None:
    first = build_container(make_settings(tmp_path), telemetry=disabled_telemetry())
    await first.start()
    await first.aclose()
    wider = build_container(
        make_settings(tmp_path, RAGWATCH_EMBEDDING_DIMENSIONS="512"), telemetry=disabled_telemetry()
    )

    with pytest.raises(RuntimeError, match="RAGWATCH_EMBEDDING_DIMENSIONS"):
        await wider.start()

    assert not [task for task in asyncio.all_tasks() if "monitor" in repr(task.get_coro())]
