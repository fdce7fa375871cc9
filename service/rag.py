"""The RAG pipeline: ingest documents, retrieve passages with hybrid search, answer with citations."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass

import anyio
import msgspec
import numpy as np

from service.auth import Principal
from service.cache import Cache, FlightAbandoned, Lookup, SingleFlight, normalize_question
from service.chunking import chunk_text
from service.config import RagSettings
from service.errors import BadRequest, Conflict, NotFound
from service.models import ChatRequest, ChatResponse, Citation, DocumentCreated, Usage
from service.pricing import PriceTable
from service.providers import NO_ANSWER, PROMPT_VERSION, Answer, Answerer, AnswerStream, Embedder, Passage
from service.providers.base import Vectors, count_tokens
from service.store import ChunkHit, DocumentRecord, KnowledgeBaseRecord, Store, new_id, now
from telemetry import GenAICall, Telemetry, current_trace_id, genai_call, stage, update_request

__all__ = ["AnswerDelta", "AnswerDone", "AnswerRecord", "NewDocument", "RagPipeline", "reciprocal_rank_fusion"]

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
    cached: bool


class AnswerRecord(msgspec.Struct, frozen=True):
    """An answer as the answer cache keeps it and as identical concurrent requests share it."""

    answer: str
    citations: list[Citation]
    model: str
    usage: Usage

    @classmethod
    def of(cls, answer: Answer, passages: Sequence[Passage]) -> AnswerRecord:
        usage = Usage(input_tokens=answer.input_tokens, output_tokens=answer.output_tokens)
        return cls(answer=answer.text, citations=_citations(passages, answer), model=answer.model, usage=usage)

    def response(self, *, cached: bool) -> ChatResponse:
        return ChatResponse(
            answer=self.answer,
            citations=self.citations,
            model=self.model,
            usage=self.usage,
            trace_id=current_trace_id(),
            cached=cached,
        )

    def done(self, *, cached: bool) -> AnswerDone:
        return AnswerDone(
            citations=self.citations, model=self.model, usage=self.usage, trace_id=current_trace_id(), cached=cached
        )


_encode = msgspec.msgpack.Encoder().encode
_decode_answer = msgspec.msgpack.Decoder(AnswerRecord).decode
_decode_passages = msgspec.msgpack.Decoder(list[Passage]).decode


def _flight_key(lookup: Lookup) -> str:
    return f"{lookup.key}:{lookup.generation or ''}"


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
        cache: Cache,
        telemetry: Telemetry,
        prices: PriceTable,
    ) -> None:
        self.store = store
        self.cache = cache
        self.embedder = embedder
        self.answerer = answerer
        self.settings = settings
        self.telemetry = telemetry
        self.prices = prices
        self._flights: SingleFlight[AnswerRecord] = SingleFlight()

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

    async def delete_knowledge_base(self, principal: Principal, kb_id: str) -> None:
        await self.knowledge_base(principal, kb_id)
        await self.store.delete_kb(principal.tenant_id, kb_id)
        await self.cache.invalidate(principal.tenant_id, kb_id)

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
        await self.cache.invalidate(principal.tenant_id, kb_id)
        instruments = self.telemetry.instruments
        tenant = {"tenant": instruments.tenant_label(principal.tenant_id)}
        instruments.ingested_documents.add(1, tenant)
        instruments.ingested_chunks.add(len(chunks), tenant)
        instruments.ingested_bytes.add(record.bytes, tenant)
        return DocumentCreated(document_id=record.document_id, chunks=len(chunks), replaced=replaced)

    async def delete_document(self, principal: Principal, kb_id: str, document_id: str) -> None:
        await self.knowledge_base(principal, kb_id)
        if not await self.store.delete_document(principal.tenant_id, kb_id, document_id):
            raise NotFound(f"No document {document_id!r} in knowledge base {kb_id!r}.")
        await self.cache.invalidate(principal.tenant_id, kb_id)

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

    async def chat(
        self, principal: Principal, request: ChatRequest, prefetched: Sequence[bytes | None] | None = None
    ) -> ChatResponse:
        """The answer, from the answer cache or computed (once for identical concurrent questions).

        ``prefetched``: the values of :meth:`answer_read_keys`, when the rate limiter has read them."""
        lookup = await self._lookup_answer(principal, request, prefetched)
        if lookup.value is not None:
            return _decode_answer(lookup.value).response(cached=True)
        record = await self._shared_answer(principal, request, lookup)
        return record.response(cached=False)

    async def chat_events(
        self, principal: Principal, request: ChatRequest, prefetched: Sequence[bytes | None] | None = None
    ) -> AsyncIterator[AnswerDelta | AnswerDone]:
        """Deltas of the answer, then one :class:`AnswerDone`; closing the iterator stops the LLM call.

        A cached answer, or one that an identical request is computing already, arrives as a single delta.
        """
        lookup = await self._lookup_answer(principal, request, prefetched)
        flight = self._flights.claim(_flight_key(lookup)) if lookup.value is None else None
        if flight is None:
            cached = lookup.value is not None
            if lookup.value is not None:
                record = _decode_answer(lookup.value)
            else:
                record = await self._shared_answer(principal, request, lookup)
            yield AnswerDelta(record.answer)
            yield record.done(cached=cached)
            return
        outcome: AnswerRecord | BaseException = FlightAbandoned()
        try:
            async for event in self._stream_answer(principal, request, lookup):
                if isinstance(event, AnswerRecord):
                    outcome = event
                else:
                    yield event
        except Exception as exc:
            outcome = exc
            raise
        finally:
            # Those waiting for this answer get it, or this request's error, or compute it themselves.
            if isinstance(outcome, AnswerRecord):
                flight.set_result(outcome)
            else:
                flight.set_exception(outcome)
        if isinstance(outcome, AnswerRecord):
            yield outcome.done(cached=False)

    async def _stream_answer(
        self, principal: Principal, request: ChatRequest, lookup: Lookup
    ) -> AsyncIterator[AnswerDelta | AnswerRecord]:
        """Deltas as the answerer streams them, then the whole answer (cached), unless the stream ends early."""
        await self._searchable(principal, request.kb_id)
        generation = await self.cache.current_generation(lookup)
        passages = await self._retrieve(principal, request, generation)
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
        record = AnswerRecord.of(answer, passages)
        # Shielded: a client hanging up now must not lose an answer already paid for.
        with anyio.CancelScope(shield=True):
            await self.cache.store(lookup, _encode(record), generation)
        yield record

    async def _shared_answer(self, principal: Principal, request: ChatRequest, lookup: Lookup) -> AnswerRecord:
        """The answer of the flight in progress for this question, or of a new one this request leads."""
        key = _flight_key(lookup)

        def compute() -> Awaitable[AnswerRecord]:
            return self._compute_answer(principal, request, lookup)

        if self._flights.in_flight(key) is None:
            return await self._flights.run(key, compute)
        with stage(self.telemetry, "rag.singleflight.wait"):
            return await self._flights.run(key, compute)

    def answer_read_keys(self, principal: Principal, request: ChatRequest) -> list[str]:
        """The keys the answer cache reads for this question, for the rate limiter to read in its round trip."""
        return self.cache.read_keys("answers", principal.tenant_id, self._answer_parts(request), kb_id=request.kb_id)

    async def _lookup_answer(
        self, principal: Principal, request: ChatRequest, prefetched: Sequence[bytes | None] | None
    ) -> Lookup:
        update_request(kb_id=request.kb_id, question_length=len(request.question))
        parts = self._answer_parts(request)
        lookup = await self.cache.lookup(
            "answers", principal.tenant_id, parts, kb_id=request.kb_id, prefetched=prefetched
        )
        update_request(cache=lookup.outcome)
        return lookup

    def _answer_parts(self, request: ChatRequest) -> list[str]:
        """What decides an answer, besides the tenant and the knowledge base (and its generation)."""
        answerer = self.answerer
        return [
            normalize_question(request.question),
            str(self._top_k(request)),
            self.embedder.model,
            f"{answerer.provider}/{answerer.model}",
            PROMPT_VERSION,
            str(self.settings.min_similarity),
        ]

    async def _compute_answer(self, principal: Principal, request: ChatRequest, lookup: Lookup) -> AnswerRecord:
        # The knowledge base is checked before a generation is started for it, so unknown ids leave no key.
        await self._searchable(principal, request.kb_id)
        generation = await self.cache.current_generation(lookup)
        passages = await self._retrieve(principal, request, generation)
        answer = await self._answer(principal, request.question, passages) if passages else self._no_answer()
        record = AnswerRecord.of(answer, passages)
        await self.cache.store(lookup, _encode(record), generation)
        return record

    async def _retrieve(self, principal: Principal, request: ChatRequest, generation: str | None) -> list[Passage]:
        """Passages for the question, from the retrieval cache or by hybrid search; the knowledge base is
        known to exist and to match the embedder (see :meth:`_searchable`)."""
        top_k = self._top_k(request)
        started = time.perf_counter()
        with stage(self.telemetry, "rag.retrieve", **{"rag.top_k": top_k}) as span:
            parts = [
                normalize_question(request.question),
                str(top_k),
                self.embedder.model,
                str(self.settings.min_similarity),
            ]
            lookup = await self.cache.lookup(
                "retrieval", principal.tenant_id, parts, kb_id=request.kb_id, generation=generation
            )
            if lookup.value is not None:
                passages = _decode_passages(lookup.value)
            else:
                generation = await self.cache.current_generation(lookup)
                passages = await self._search(principal, request.kb_id, request.question, top_k)
                await self.cache.store(lookup, _encode(passages), generation)
            span.set_attribute("rag.retrieval.results", len(passages))
        instruments = self.telemetry.instruments
        instruments.retrieval_duration.record(time.perf_counter() - started)
        instruments.retrieval_results.record(len(passages))
        return passages

    async def _search(self, principal: Principal, kb_id: str, question: str, top_k: int) -> list[Passage]:
        vector = await self._embed_question(principal, question)
        candidates = min(top_k * 3, 100)
        vector_hits, text_hits = await self.store.hybrid_search(
            principal.tenant_id, kb_id, vector, question, candidates
        )
        with stage(self.telemetry, "rag.fusion"):
            relevant = [hit for hit in vector_hits if hit.score >= self.settings.min_similarity]
            return reciprocal_rank_fusion([relevant, text_hits], top_k)

    async def _embed_question(self, principal: Principal, question: str) -> Vectors:
        embedder = self.embedder
        parts = [embedder.model, str(embedder.dimensions), question]
        lookup = await self.cache.lookup("embeddings", principal.tenant_id, parts)
        if lookup.value is not None and len(lookup.value) == embedder.dimensions * 4:
            cached: Vectors = np.frombuffer(lookup.value, dtype=np.float32)
            return cached
        vector: Vectors = (await self._embed([question], principal.tenant_id))[0].astype(np.float32)
        await self.cache.store(lookup, vector.tobytes())
        return vector

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
