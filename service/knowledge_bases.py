"""Knowledge bases: the tenancy boundary every other service checks first."""

from __future__ import annotations

import msgspec

from service.auth import Principal
from service.cache import Cache
from service.errors import Conflict, NotFound
from service.models import KnowledgeBase, KnowledgeBaseCreate, KnowledgeBaseDetail
from service.store import KnowledgeBaseRecord, Store
from telemetry import update_request

__all__ = ["KnowledgeBases"]


class KnowledgeBases:
    def __init__(self, store: Store, cache: Cache, embedding_model: str) -> None:
        self._store = store
        self._cache = cache
        self._embedding_model = embedding_model

    async def create(self, principal: Principal, data: KnowledgeBaseCreate) -> KnowledgeBase:
        """A new knowledge base, bound to the embedder the service uses now."""
        record = await self._store.create_kb(
            principal.tenant_id, data.name.strip(), data.description, self._embedding_model
        )
        return _public(record)

    async def list_all(self, principal: Principal) -> list[KnowledgeBase]:
        return [_public(record) for record in await self._store.list_kbs(principal.tenant_id)]

    async def get(self, principal: Principal, kb_id: str) -> KnowledgeBaseRecord:
        """The caller's knowledge base; a foreign id is as unknown as a missing one (404).

        Once found, its id joins the request's log context and server span (``rag.kb.id``) on every route
        that works within a knowledge base.
        """
        record = await self._store.get_kb(principal.tenant_id, kb_id)
        if record is None:
            raise NotFound(f"No knowledge base {kb_id!r} in this tenant.")
        update_request(kb_id=record.id)
        return record

    async def searchable(self, principal: Principal, kb_id: str) -> KnowledgeBaseRecord:
        """The caller's knowledge base, embedded with the embedder the service uses now (else 409)."""
        record = await self.get(principal, kb_id)
        if record.embedding_model != self._embedding_model:
            raise Conflict(
                f"Knowledge base {kb_id!r} was embedded with {record.embedding_model!r}, but the service now "
                f"uses {self._embedding_model!r}; re-create it and ingest its documents again."
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
        await self._store.delete_kb(principal.tenant_id, kb_id)
        await self._cache.invalidate(principal.tenant_id, kb_id)


def _public(record: KnowledgeBaseRecord) -> KnowledgeBase:
    return msgspec.convert(record, KnowledgeBase, from_attributes=True)
