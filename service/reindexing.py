"""Re-indexing: a knowledge base embedded with another embedder, embedded again with the one the service uses.

A knowledge base remembers the embedder it was built with, and chat, search and uploads refuse one built with
another (409: its vectors and the question's would not be comparable). Switching embedders (for example from
the hashing embedder to WordLlama, the default now) therefore needs every chunk embedded again: this
does it from the chunks' stored text (as ingestion embeds them: under their document's title and section),
keeping every document, page and section as it is.
"""

from __future__ import annotations

from service.auth import Principal
from service.cache import Cache
from service.chunking import Block, embedding_text
from service.embeddings import Embeddings
from service.knowledge_bases import KnowledgeBases
from service.models import Reindexed
from service.providers.base import Vectors
from service.store import Store
from telemetry import Telemetry, stage

__all__ = ["Reindexing"]


class Reindexing:
    def __init__(
        self, knowledge_bases: KnowledgeBases, store: Store, embeddings: Embeddings, cache: Cache, telemetry: Telemetry
    ) -> None:
        self._knowledge_bases = knowledge_bases
        self._store = store
        self._embeddings = embeddings
        self._cache = cache
        self._telemetry = telemetry

    async def reindex(self, principal: Principal, kb_id: str) -> Reindexed:
        """Embed every chunk again with the current embedder (nothing to do when it is the one already used)."""
        record = await self._knowledge_bases.get(principal, kb_id)
        model = self._embeddings.model
        if record.embedding_model == model:
            return Reindexed(kb_id=kb_id, embedding_model=model, previous_embedding_model=model, chunks=0)
        tenant_id = principal.tenant_id

        async def embed(chunks: list[Block], titles: list[str]) -> Vectors:
            texts = [embedding_text(title, chunk) for chunk, title in zip(chunks, titles, strict=True)]
            return await self._embeddings.embed_all(texts, tenant_id)

        with stage(self._telemetry, "ingest.reindex", **{"rag.kb.id": kb_id}) as span:
            chunks = await self._store.reembed(tenant_id, kb_id, embed, model)
            span.set_attribute("rag.chunks", chunks)
        self._knowledge_bases.forget(tenant_id, kb_id)
        await self._cache.invalidate(tenant_id, kb_id)
        return Reindexed(
            kb_id=kb_id, embedding_model=model, previous_embedding_model=record.embedding_model, chunks=chunks
        )
