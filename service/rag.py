"""The RAG pipeline: ingest documents, retrieve passages with hybrid search, answer with citations."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import anyio
import msgspec
import numpy as np

from service.auth import Principal
from service.chunking import chunk_text
from service.config import RagSettings
from service.errors import BadRequest, Conflict, NotFound
from service.models import ChatRequest, ChatResponse, Citation, DocumentCreated, Usage
from service.providers import NO_ANSWER, Answer, Answerer, Embedder, Passage
from service.providers.base import Vectors
from service.store import ChunkHit, DocumentRecord, KnowledgeBaseRecord, Store, new_id, now
from telemetry import current_trace_id

__all__ = ["AnswerDelta", "AnswerDone", "NewDocument", "RagPipeline", "reciprocal_rank_fusion"]

RRF_K = 60
_EMBED_BATCH = 128


@dataclass(frozen=True)
class NewDocument:
    title: str
    text: str
    metadata: dict[str, object]
    document_id: str | None = None


class AnswerDelta(msgspec.Struct, frozen=True):
    text: str


class AnswerDone(msgspec.Struct, frozen=True):
    citations: list[Citation]
    model: str
    usage: Usage
    trace_id: str


def reciprocal_rank_fusion(rankings: Sequence[Sequence[ChunkHit]], limit: int) -> list[Passage]:
    """Fuse ranked lists by reciprocal rank (k=60), scored 0..1 (1: first in every list).

    Fused by ``chunk_id`` rather than LanceDB's row id (which lancedb's RRFReranker keys on), because the
    vector and full-text queries may read different table versions when a write lands between them.
    """
    scores: dict[str, float] = {}
    hits: dict[str, ChunkHit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + 1.0 / (RRF_K + rank)
            hits.setdefault(hit.chunk_id, hit)
    best = 1.0 / (RRF_K + 1) * max(len(rankings), 1)
    ordered = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return [
        Passage(
            document_id=hits[chunk_id].document_id,
            chunk_id=chunk_id,
            title=hits[chunk_id].title,
            text=hits[chunk_id].text,
            score=round(score / best, 4),
        )
        for chunk_id, score in ordered
    ]


class RagPipeline:
    def __init__(self, store: Store, embedder: Embedder, answerer: Answerer, settings: RagSettings) -> None:
        self.store = store
        self.embedder = embedder
        self.answerer = answerer
        self.settings = settings

    # --- knowledge bases ---------------------------------------------------------------------------------

    async def knowledge_base(self, principal: Principal, kb_id: str) -> KnowledgeBaseRecord:
        """The caller's knowledge base; a foreign id is as unknown as a missing one."""
        record = await self.store.get_kb(principal.tenant_id, kb_id)
        if record is None:
            raise NotFound(f"No knowledge base {kb_id!r} in this tenant.")
        return record

    async def _searchable(self, principal: Principal, kb_id: str) -> KnowledgeBaseRecord:
        record = await self.knowledge_base(principal, kb_id)
        if record.embedding_model != self.embedder.model:
            raise Conflict(
                f"Knowledge base {kb_id!r} was embedded with {record.embedding_model!r}, but the service now "
                f"uses {self.embedder.model!r}; re-create it and ingest its documents again."
            )
        return record

    # --- ingestion -----------------------------------------------------------------------------------------

    async def ingest(self, principal: Principal, kb_id: str, document: NewDocument) -> DocumentCreated:
        await self._searchable(principal, kb_id)
        chunks = chunk_text(document.text, self.settings.chunk_size, self.settings.chunk_overlap)
        if not chunks:
            raise BadRequest("The document has no text to index.")
        vectors = await self._embed_all(chunks)
        record = DocumentRecord(
            document_id=document.document_id or new_id("doc"),
            title=document.title,
            chunks=len(chunks),
            bytes=len(document.text.encode()),
            metadata=dict(document.metadata),
            created_at=now(),
            text=document.text,
        )
        replaced = await self.store.write_document(principal.tenant_id, kb_id, record, chunks, vectors)
        return DocumentCreated(document_id=record.document_id, chunks=len(chunks), replaced=replaced)

    async def _embed_all(self, texts: Sequence[str]) -> Vectors:
        batches = [texts[i : i + _EMBED_BATCH] for i in range(0, len(texts), _EMBED_BATCH)]
        parts = [await self.embedder.embed(batch) for batch in batches]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    # --- retrieval and answers ----------------------------------------------------------------------------

    async def retrieve(self, principal: Principal, kb_id: str, question: str, top_k: int) -> list[Passage]:
        await self._searchable(principal, kb_id)
        vector = (await self.embedder.embed([question]))[0]
        candidates = min(top_k * 3, 100)
        vector_hits, text_hits = await self.store.hybrid_search(
            principal.tenant_id, kb_id, vector, question, candidates
        )
        relevant = [hit for hit in vector_hits if hit.score >= self.settings.min_similarity]
        return reciprocal_rank_fusion([relevant, text_hits], top_k)

    async def chat(self, principal: Principal, request: ChatRequest) -> ChatResponse:
        passages = await self.retrieve(principal, request.kb_id, request.question, self._top_k(request))
        answer = await self.answerer.answer(request.question, passages) if passages else self._no_answer()
        return ChatResponse(
            answer=answer.text,
            citations=_citations(passages, answer),
            model=answer.model,
            usage=Usage(input_tokens=answer.input_tokens, output_tokens=answer.output_tokens),
            trace_id=current_trace_id(),
        )

    async def chat_events(self, principal: Principal, request: ChatRequest) -> AsyncIterator[AnswerDelta | AnswerDone]:
        """Deltas of the answer, then one :class:`AnswerDone`; closing the iterator stops the LLM call."""
        passages = await self.retrieve(principal, request.kb_id, request.question, self._top_k(request))
        if not passages:
            answer = self._no_answer()
            yield AnswerDelta(answer.text)
        else:
            stream = await self.answerer.stream(request.question, passages)
            try:
                async for delta in stream:
                    yield AnswerDelta(delta)
            finally:
                # Shielded: when the client went away this runs cancelled, yet the upstream call must be closed.
                with anyio.CancelScope(shield=True):
                    await stream.aclose()
            if stream.result is None:
                return
            answer = stream.result
        yield AnswerDone(
            citations=_citations(passages, answer),
            model=answer.model,
            usage=Usage(input_tokens=answer.input_tokens, output_tokens=answer.output_tokens),
            trace_id=current_trace_id(),
        )

    def _top_k(self, request: ChatRequest) -> int:
        return request.top_k or self.settings.default_top_k

    def _no_answer(self) -> Answer:
        """Nothing relevant was retrieved: say so without spending an LLM call."""
        return Answer(text=NO_ANSWER, model=self.answerer.model, input_tokens=0, output_tokens=0, finish_reason="stop")


def _citations(passages: Sequence[Passage], answer: Answer) -> list[Citation]:
    """The passages the answer was drawn from; none when it says the knowledge base does not say."""
    if answer.text.strip() == NO_ANSWER:
        return []
    return [
        Citation(document_id=p.document_id, chunk_id=p.chunk_id, title=p.title, score=p.score, text=p.text)
        for p in passages
    ]
