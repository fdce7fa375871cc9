"""The RAG pipeline: ingest documents, retrieve passages with hybrid search, answer with citations."""

from __future__ import annotations

import time
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
from service.pricing import PriceTable
from service.providers import NO_ANSWER, Answer, Answerer, AnswerStream, Embedder, Passage
from service.providers.base import Vectors, count_tokens
from service.store import ChunkHit, DocumentRecord, KnowledgeBaseRecord, Store, new_id, now
from telemetry import GenAICall, Telemetry, current_trace_id, genai_call, stage, update_request

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
    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        answerer: Answerer,
        settings: RagSettings,
        *,
        telemetry: Telemetry,
        prices: PriceTable,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.answerer = answerer
        self.settings = settings
        self.telemetry = telemetry
        self.prices = prices

    # --- knowledge bases ---------------------------------------------------------------------------------

    async def knowledge_base(self, principal: Principal, kb_id: str) -> KnowledgeBaseRecord:
        """The caller's knowledge base; a foreign id is as unknown as a missing one.

        Once found, its id joins the request's log context and server span (``rag.kb.id``) on every route
        that works within a knowledge base.
        """
        record = await self.store.get_kb(principal.tenant_id, kb_id)
        if record is None:
            raise NotFound(f"No knowledge base {kb_id!r} in this tenant.")
        update_request(kb_id=record.id)
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
        with stage(self.telemetry, "ingest.chunk") as span:
            chunks = chunk_text(document.text, self.settings.chunk_size, self.settings.chunk_overlap)
            span.set_attribute("rag.chunks", len(chunks))
        if not chunks:
            raise BadRequest("The document has no text to index.")
        with stage(self.telemetry, "ingest.embed", **{"rag.chunks": len(chunks)}):
            vectors = await self._embed_all(chunks, principal.tenant_id)
        record = DocumentRecord(
            document_id=document.document_id or new_id("doc"),
            title=document.title,
            chunks=len(chunks),
            bytes=len(document.text.encode()),
            metadata=dict(document.metadata),
            created_at=now(),
            text=document.text,
        )
        with stage(self.telemetry, "ingest.write"):
            replaced = await self.store.write_document(principal.tenant_id, kb_id, record, chunks, vectors)
        instruments = self.telemetry.instruments
        tenant = {"tenant": instruments.tenant_label(principal.tenant_id)}
        instruments.ingested_documents.add(1, tenant)
        instruments.ingested_chunks.add(len(chunks), tenant)
        instruments.ingested_bytes.add(record.bytes, tenant)
        return DocumentCreated(document_id=record.document_id, chunks=len(chunks), replaced=replaced)

    async def _embed_all(self, texts: Sequence[str], tenant_id: str) -> Vectors:
        batches = [texts[i : i + _EMBED_BATCH] for i in range(0, len(texts), _EMBED_BATCH)]
        parts = [await self._embed(batch, tenant_id) for batch in batches]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    async def _embed(self, texts: Sequence[str], tenant_id: str) -> Vectors:
        embedder = self.embedder
        with genai_call(
            self.telemetry,
            "embeddings",
            embedder.provider,
            embedder.model,
            tenant_id=tenant_id,
            remote=_remote(embedder),
        ) as call:
            vectors = await embedder.embed(texts)
            call.response_model = embedder.model
            # The Embedder interface returns vectors only; tokens are counted the way the offline default does.
            call.input_tokens = sum(count_tokens(text) for text in texts)
            call.cost_usd = self.prices.cost(embedder.model, call.input_tokens, 0)
        return vectors

    # --- retrieval and answers ----------------------------------------------------------------------------

    async def retrieve(self, principal: Principal, kb_id: str, question: str, top_k: int) -> list[Passage]:
        update_request(kb_id=kb_id, question_length=len(question))
        await self._searchable(principal, kb_id)
        started = time.perf_counter()
        with stage(self.telemetry, "rag.retrieve", **{"rag.top_k": top_k}) as span:
            vector = (await self._embed([question], principal.tenant_id))[0]
            candidates = min(top_k * 3, 100)
            vector_hits, text_hits = await self.store.hybrid_search(
                principal.tenant_id, kb_id, vector, question, candidates
            )
            with stage(self.telemetry, "rag.fusion"):
                relevant = [hit for hit in vector_hits if hit.score >= self.settings.min_similarity]
                passages = reciprocal_rank_fusion([relevant, text_hits], top_k)
            span.set_attribute("rag.retrieval.results", len(passages))
        instruments = self.telemetry.instruments
        instruments.retrieval_duration.record(time.perf_counter() - started)
        instruments.retrieval_results.record(len(passages))
        return passages

    async def chat(self, principal: Principal, request: ChatRequest) -> ChatResponse:
        passages = await self.retrieve(principal, request.kb_id, request.question, self._top_k(request))
        answer = await self._answer(principal, request.question, passages) if passages else self._no_answer()
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
            call = self._chat_call(principal, request.question)
            stream: AnswerStream | None = None
            try:
                with call.active():
                    stream = await self.answerer.stream(request.question, passages)
                async for delta in stream:
                    call.first_token()
                    yield AnswerDelta(delta)
            except BaseException as exc:
                call.fail(exc)
                raise
            finally:
                if stream is not None:
                    # Shielded: when the client went away this runs cancelled, yet the upstream call must close.
                    with anyio.CancelScope(shield=True):
                        await stream.aclose()
                    if stream.result is not None:
                        self._describe(call, stream.result)
                call.end()
            if stream.result is None:
                return
            answer = stream.result
        yield AnswerDone(
            citations=_citations(passages, answer),
            model=answer.model,
            usage=Usage(input_tokens=answer.input_tokens, output_tokens=answer.output_tokens),
            trace_id=current_trace_id(),
        )

    async def _answer(self, principal: Principal, question: str, passages: Sequence[Passage]) -> Answer:
        call = self._chat_call(principal, question)
        try:
            with call.active():
                answer = await self.answerer.answer(question, passages)
        except BaseException as exc:
            call.fail(exc)
            raise
        else:
            self._describe(call, answer)
        finally:
            call.end()
        return answer

    def _chat_call(self, principal: Principal, question: str) -> GenAICall:
        answerer = self.answerer
        return GenAICall(
            self.telemetry,
            "chat",
            answerer.provider,
            answerer.model,
            tenant_id=principal.tenant_id,
            remote=_remote(answerer),
            input_text=question,
        )

    def _describe(self, call: GenAICall, answer: Answer) -> None:
        call.response_model = answer.model
        call.input_tokens = answer.input_tokens
        call.output_tokens = answer.output_tokens
        call.finish_reasons = [answer.finish_reason]
        call.output_text = answer.text
        call.cost_usd = self.prices.cost(self.answerer.model, answer.input_tokens, answer.output_tokens)

    def _top_k(self, request: ChatRequest) -> int:
        return request.top_k or self.settings.default_top_k

    def _no_answer(self) -> Answer:
        """Nothing relevant was retrieved: say so without spending an LLM call."""
        return Answer(text=NO_ANSWER, model=self.answerer.model, input_tokens=0, output_tokens=0, finish_reason="stop")


def _remote(provider: Embedder | Answerer) -> bool:
    """Whether calls leave the process (a client span) or run in it (the offline default: an internal span)."""
    return provider.provider != "ragwatch"


def _citations(passages: Sequence[Passage], answer: Answer) -> list[Citation]:
    """The passages the answer was drawn from; none when it says the knowledge base does not say."""
    if answer.text.strip() == NO_ANSWER:
        return []
    return [
        Citation(document_id=p.document_id, chunk_id=p.chunk_id, title=p.title, score=p.score, text=p.text)
        for p in passages
    ]
