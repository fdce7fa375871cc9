"""``client.knowledge_bases``: create, list (every page), one page, get, reindex and delete, with both clients."""

from __future__ import annotations

import uuid

import pytest
from ragwatch_client import KnowledgeBase, KnowledgeBaseDetail, NotFoundError, Page, Reindexed

from tests.clients.both import Api, collect, resolve
from tests.support import HANDBOOK


async def test_create_then_get_answers_typed_knowledge_bases(api: Api) -> None:
    created = await resolve(api.knowledge_bases.create("handbook", "What employees ask HR"))
    await resolve(api.documents.create(created.id, "Handbook", HANDBOOK))

    detail = await resolve(api.knowledge_bases.get(created.id))

    assert isinstance(created, KnowledgeBase)
    assert (created.name, created.description) == ("handbook", "What employees ask HR")
    assert created.created_at
    assert isinstance(detail, KnowledgeBaseDetail)
    assert (detail.id, detail.name, detail.created_at) == (created.id, "handbook", created.created_at)
    assert detail.document_count == 1
    assert detail.chunk_count >= 1


async def test_list_follows_every_page(api: Api) -> None:
    created = [await resolve(api.knowledge_bases.create(f"kb {number}")) for number in range(5)]

    listed = await collect(api.knowledge_bases.list(limit=2))

    assert [kb.id for kb in listed] == [kb.id for kb in created]  # oldest first, across three pages
    assert all(isinstance(kb, KnowledgeBase) for kb in listed)


async def test_page_returns_one_page_and_the_cursor_of_the_next(api: Api) -> None:
    created = [await resolve(api.knowledge_bases.create(f"kb {number}")) for number in range(3)]

    first = await resolve(api.knowledge_bases.page(limit=2))
    assert first.next_cursor is not None
    second = await resolve(api.knowledge_bases.page(limit=2, cursor=first.next_cursor))

    assert isinstance(first, Page)
    assert [kb.id for kb in first.data] == [kb.id for kb in created[:2]]
    assert [kb.id for kb in second.data] == [created[2].id]
    assert second.next_cursor is None


async def test_list_of_a_tenant_without_knowledge_bases_is_empty(api: Api) -> None:
    assert await collect(api.knowledge_bases.list()) == []


async def test_delete_removes_the_knowledge_base(api: Api, kb_id: str) -> None:
    await resolve(api.knowledge_bases.delete(kb_id))

    with pytest.raises(NotFoundError):
        await resolve(api.knowledge_bases.get(kb_id))
    assert await collect(api.knowledge_bases.list()) == []


async def test_reindex_on_the_servers_embedder_has_nothing_to_do(api: Api, kb_id: str) -> None:
    done = await resolve(api.knowledge_bases.reindex(kb_id))

    assert isinstance(done, Reindexed)
    assert done.kb_id == kb_id
    assert done.chunks == 0
    assert done.embedding_model == done.previous_embedding_model == "hashing-384"


async def test_a_create_repeated_with_its_idempotency_key_creates_once(api: Api) -> None:
    key = f"create-{uuid.uuid4()}"

    first = await resolve(api.knowledge_bases.create("once", idempotency_key=key))
    again = await resolve(api.knowledge_bases.create("once", idempotency_key=key))

    assert again == first
    assert [kb.id for kb in await collect(api.knowledge_bases.list())] == [first.id]


async def test_creates_without_a_key_each_get_their_own(api: Api) -> None:
    """The key the client makes up is new for every call: two calls are two knowledge bases."""
    first = await resolve(api.knowledge_bases.create("twice"))
    second = await resolve(api.knowledge_bases.create("twice"))

    assert first.id != second.id
    assert len(await collect(api.knowledge_bases.list())) == 2
