"""Knowledge bases: the tenancy boundary every other service checks first."""

from __future__ import annotations

import time

import msgspec
from cachetools import TTLCache

from service.auth import Principal
from service.cache import Cache
from service.errors import Conflict, NotFound
from service.idempotency import Idempotency, Replayable
from service.models import KnowledgeBase, KnowledgeBaseCreate, KnowledgeBaseDetail, KnowledgeBasePage
from service.pagination import after, page
from service.store import KnowledgeBaseRecord, Store
from telemetry import update_request

__all__ = ["KnowledgeBases"]


class KnowledgeBases:
    """Knowledge bases as each request finds them.

    A lookup is remembered for ``fresh_for_s`` (``RAGWATCH_READ_CONSISTENCY_S``): no longer than another
    process's writes may take to be seen anyway, so a knowledge base created or deleted through another
    replica is seen as soon as before, and one deleted through this process is forgotten at once. It spares
    every chat, search and upload a LanceDB query.
    """

    def __init__(
        self,
        store: Store,
        cache: Cache,
        idempotency: Idempotency,
        embedding_model: str,
        *,
        fresh_for_s: float = 0.5,
    ) -> None:
        self._store = store
        self._cache = cache
        self._idempotency = idempotency
        self._embedding_model = embedding_model
        self._found: TTLCache[tuple[str, str], KnowledgeBaseRecord | None] | None = (
            TTLCache(maxsize=10_000, ttl=fresh_for_s, timer=time.monotonic) if fresh_for_s > 0 else None
        )

    async def create(
        self, principal: Principal, data: KnowledgeBaseCreate, idempotency_key: str | None = None
    ) -> Replayable[KnowledgeBase]:
        """A new knowledge base, bound to the embedder the service uses now; for a repeat of
        ``idempotency_key``, the one its first request created."""

        async def create() -> KnowledgeBase:
            name = data.name.strip()
            return _public(
                await self._store.create_kb(principal.tenant_id, name, data.description, self._embedding_model)
            )

        return await self._idempotency.once(
            principal,
            idempotency_key,
            operation="kb.create",
            request=[msgspec.json.encode(data)],
            compute=create,
            result_type=KnowledgeBase,
        )

    async def list_all(self, principal: Principal) -> list[KnowledgeBase]:
        return [_public(record) for record in await self._store.list_kbs(principal.tenant_id)]

    async def list_page(self, principal: Principal, limit: int, cursor: str | None) -> KnowledgeBasePage:
        """``limit`` knowledge bases after ``cursor`` (oldest first), and the cursor of the next page."""
        records = await self._store.list_kbs(principal.tenant_id, after=after(cursor, "id"), limit=limit + 1)
        items, next_cursor = page([_public(r) for r in records], limit, lambda kb: (kb.created_at, kb.id))
        return KnowledgeBasePage(data=items, next_cursor=next_cursor)

    async def get(self, principal: Principal, kb_id: str) -> KnowledgeBaseRecord:
        """The caller's knowledge base; a foreign id is as unknown as a missing one (404).

        Once found, its id joins the request's log context and server span (``rag.kb.id``) on every route
        that works within a knowledge base.
        """
        record = await self._lookup(principal.tenant_id, kb_id)
        if record is None:
            raise NotFound(f"No knowledge base {kb_id!r} in this tenant.")
        update_request(kb_id=record.id)
        return record

    async def _lookup(self, tenant_id: str, kb_id: str) -> KnowledgeBaseRecord | None:
        key = (tenant_id, kb_id)
        if self._found is not None:
            try:  # one read: an entry found by `in` may expire before it is read (a 500 the soak found)
                return self._found[key]
            except KeyError:
                pass
        record = await self._store.get_kb(tenant_id, kb_id)
        if self._found is not None:
            self._found[key] = record
        return record

    async def searchable(self, principal: Principal, kb_id: str) -> KnowledgeBaseRecord:
        """The caller's knowledge base, embedded with the embedder the service uses now (else 409)."""
        record = await self.get(principal, kb_id)
        if record.embedding_model != self._embedding_model:
            raise Conflict(
                f"Knowledge base {kb_id!r} was embedded with {record.embedding_model!r}, but the service now "
                f"uses {self._embedding_model!r}; re-index it (POST /v1/knowledge-bases/{kb_id}/reindex, or "
                f"`ragwatch reindex --kb {kb_id}`)."
            )
        return record

    async def detail(self, principal: Principal, kb_id: str) -> KnowledgeBaseDetail:
        """The knowledge base with its document and chunk counts."""
        record = await self.get(principal, kb_id)
        documents, chunks = await self._store.kb_counts(principal.tenant_id, kb_id)
        return KnowledgeBaseDetail(
            **msgspec.structs.asdict(_public(record)), document_count=documents, chunk_count=chunks
        )

    async def delete(self, principal: Principal, kb_id: str) -> None:
        """Delete the knowledge base and its documents; its cached answers go stale at once."""
        await self.get(principal, kb_id)
        self.forget(principal.tenant_id, kb_id)
        await self._store.delete_kb(principal.tenant_id, kb_id)
        self.forget(principal.tenant_id, kb_id)
        await self._cache.invalidate(principal.tenant_id, kb_id)

    def forget(self, tenant_id: str, kb_id: str) -> None:
        """Look the knowledge base up again on its next use (it was deleted or changed by this process)."""
        if self._found is not None:
            self._found.pop((tenant_id, kb_id), None)


def _public(record: KnowledgeBaseRecord) -> KnowledgeBase:
    return msgspec.convert(record, KnowledgeBase, from_attributes=True)
