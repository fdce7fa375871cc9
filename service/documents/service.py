"""Documents: parse, chunk, embed, write atomically, and make the knowledge base's cached answers stale."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import msgspec

from service.auth import Principal
from service.cache import Cache
from service.chunking import Block, chunk_blocks, embedding_text
from service.config import RagSettings
from service.documents.submissions import JsonSubmission, NewDocument, Submission, parse_json, submission_parts
from service.documents.uploads import Uploads
from service.embeddings import Embeddings
from service.errors import BadRequest, NotFound
from service.idempotency import Idempotency, Replayable
from service.knowledge_bases import KnowledgeBases
from service.models import DocumentCreated, DocumentDetail, DocumentPage, DocumentSummary
from service.pagination import after, page
from service.store import DocumentRecord, Store, new_id, now
from telemetry import Telemetry, stage

__all__ = ["Documents"]

_CHUNK_ON_THE_LOOP = 100_000
"""Characters up to which a document is chunked on the event loop (a few milliseconds); longer ones in a thread."""


class Documents:
    def __init__(
        self,
        knowledge_bases: KnowledgeBases,
        store: Store,
        embeddings: Embeddings,
        cache: Cache,
        uploads: Uploads,
        *,
        idempotency: Idempotency,
        settings: RagSettings,
        telemetry: Telemetry,
    ) -> None:
        self._knowledge_bases = knowledge_bases
        self._uploads = uploads
        self._idempotency = idempotency
        self._store = store
        self._embeddings = embeddings
        self._cache = cache
        self._settings = settings
        self._telemetry = telemetry

    async def ingest(
        self,
        principal: Principal,
        kb_id: str,
        submission: Awaitable[Submission],
        idempotency_key: str | None = None,
    ) -> Replayable[DocumentCreated]:
        """Read and parse what the request submitted (the ``ingest.parse`` span), then :meth:`write` it; for a
        repeat of ``idempotency_key``, the first request's result."""
        received = await submission

        async def ingest() -> DocumentCreated:
            with stage(self._telemetry, "ingest.parse") as span:
                if isinstance(received, JsonSubmission):
                    document = parse_json(received.body)
                else:
                    span.set_attribute("rag.document.bytes", len(received.content))
                    document = await self._uploads.document(received)
            return await self.write(principal, kb_id, document)

        return await self._idempotency.once(
            principal,
            idempotency_key,
            operation="document.ingest",
            request=[kb_id, *submission_parts(received)],
            compute=ingest,
            result_type=DocumentCreated,
        )

    async def write(self, principal: Principal, kb_id: str, document: NewDocument) -> DocumentCreated:
        """Chunk, embed and write ``document`` in one commit (replacing one of the same id), then invalidate."""
        await self._knowledge_bases.searchable(principal, kb_id)
        with stage(self._telemetry, "ingest.chunk") as span:
            blocks = document.blocks or (Block(document.text),)
            size, overlap = self._settings.chunk_size, self._settings.chunk_overlap
            if len(document.text) > _CHUNK_ON_THE_LOOP:  # a long document is cut in a thread: other requests go on
                chunks = await asyncio.to_thread(chunk_blocks, blocks, size, overlap)
            else:
                chunks = chunk_blocks(blocks, size, overlap)
            span.set_attribute("rag.chunks", len(chunks))
        if not chunks:
            raise BadRequest("The document has no text to index.")
        with stage(self._telemetry, "ingest.embed", **{"rag.chunks": len(chunks)}):
            texts = [embedding_text(document.title, chunk) for chunk in chunks]
            vectors = await self._embeddings.embed_all(texts, principal.tenant_id)
        record = DocumentRecord(
            document_id=document.document_id or new_id("doc"),
            title=document.title,
            chunks=len(chunks),
            bytes=len(document.text.encode()),
            metadata=dict(document.metadata),
            created_at=now(),
            text=document.text,
        )
        with stage(self._telemetry, "ingest.write"):
            replaced = await self._store.write_document(principal.tenant_id, kb_id, record, chunks, vectors)
        await self._cache.invalidate(principal.tenant_id, kb_id)
        instruments = self._telemetry.instruments
        tenant = {"tenant": instruments.tenant_label(principal.tenant_id)}
        instruments.ingested_documents.add(1, tenant)
        instruments.ingested_chunks.add(len(chunks), tenant)
        instruments.ingested_bytes.add(record.bytes, tenant)
        return DocumentCreated(document_id=record.document_id, chunks=len(chunks), replaced=replaced)

    async def list_page(self, principal: Principal, kb_id: str, limit: int, cursor: str | None) -> DocumentPage:
        """``limit`` documents after ``cursor`` (oldest first), and the cursor of the next page."""
        await self._knowledge_bases.get(principal, kb_id)
        records = await self._store.list_documents(
            principal.tenant_id, kb_id, after=after(cursor, "document_id"), limit=limit + 1
        )
        summaries = [msgspec.convert(record, DocumentSummary, from_attributes=True) for record in records]
        items, next_cursor = page(summaries, limit, lambda d: (d.created_at, d.document_id))
        return DocumentPage(data=items, next_cursor=next_cursor)

    async def get(self, principal: Principal, kb_id: str, document_id: str) -> DocumentDetail:
        """The document with its full text."""
        await self._knowledge_bases.get(principal, kb_id)
        record = await self._store.get_document(principal.tenant_id, kb_id, document_id)
        if record is None:
            raise NotFound(f"No document {document_id!r} in knowledge base {kb_id!r}.")
        return msgspec.convert(
            msgspec.structs.replace(record, text=record.text or ""), DocumentDetail, from_attributes=True
        )

    async def aclose(self) -> None:
        """End the parser processes."""
        await self._uploads.aclose()

    async def delete(self, principal: Principal, kb_id: str, document_id: str) -> None:
        await self._knowledge_bases.get(principal, kb_id)
        if not await self._store.delete_document(principal.tenant_id, kb_id, document_id):
            raise NotFound(f"No document {document_id!r} in knowledge base {kb_id!r}.")
        await self._cache.invalidate(principal.tenant_id, kb_id)
