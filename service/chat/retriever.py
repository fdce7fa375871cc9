"""Retrieval: the passages of a knowledge base that answer a question.

From the retrieval cache when the knowledge base has not changed; else the question is embedded (through
the embeddings cache), searched by vector and by full text on the same table version, and the two scores
are fused by a weighted sum (:mod:`service.chat.fusion`). Vector hits less similar than
``RAGWATCH_MIN_SIMILARITY`` are dropped first, so an off-topic question finds nothing rather than the least
unrelated passages.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import msgspec
import numpy as np

from service.cache import Cache, normalize_question
from service.chat.fusion import FUSION, weighted_fusion
from service.embeddings import Embeddings
from service.models import Passage
from service.providers.base import Vectors, normalize_rows
from service.store import Store
from telemetry import Telemetry, stage

__all__ = ["CONTEXT_WEIGHT", "MIN_CANDIDATES", "Retriever"]

CONTEXT_WEIGHT = 0.5
"""Weight of a conversation's earlier questions beside the question itself in the embedding searched for."""

MIN_CANDIDATES = 30
"""Candidates each search returns at least (three per passage asked for, when more): min-max normalisation
needs enough of them for the scores of the worst to mean "unrelated"."""

_encode_passages = msgspec.msgpack.Encoder().encode
_decode_passages = msgspec.msgpack.Decoder(list[Passage]).decode


class Retriever:
    def __init__(
        self,
        store: Store,
        embeddings: Embeddings,
        cache: Cache,
        telemetry: Telemetry,
        *,
        min_similarity: float,
        lexical_weight: float,
    ) -> None:
        self._store = store
        self._embeddings = embeddings
        self._cache = cache
        self._telemetry = telemetry
        self._min_similarity = min_similarity
        self._lexical_weight = lexical_weight
        self.version = f"{embeddings.model}/{min_similarity}/{FUSION}/{lexical_weight}"
        """What decides the passages found besides the question and ``top_k``: part of every cache key over them."""

    async def retrieve(
        self,
        tenant_id: str,
        kb_id: str,
        question: str,
        top_k: int,
        generation: str | None,
        *,
        context: Sequence[str] = (),
    ) -> list[Passage]:
        """Up to ``top_k`` passages, best first; the knowledge base is known to exist and to match the embedder.

        ``generation``: the knowledge base's cache generation the caller computes in (``None``: do not cache).
        ``context``: the conversation's earlier questions, oldest first: a follow-up ("Where does its
        secretariat sit?") names its subject only there. They join the full-text query, and their embedding
        joins the question's at :data:`CONTEXT_WEIGHT`.
        """
        started = time.perf_counter()
        with stage(self._telemetry, "rag.retrieve", **{"rag.top_k": top_k}) as span:
            parts = [normalize_question(question), str(top_k), self.version]
            parts += [f"earlier: {normalize_question(turn)}" for turn in context]
            lookup = await self._cache.lookup("retrieval", tenant_id, parts, kb_id=kb_id, generation=generation)
            if lookup.value is not None:
                passages = _decode_passages(lookup.value)
            else:
                generation = await self._cache.current_generation(lookup)
                passages = await self._search(tenant_id, kb_id, question, top_k, context)
                await self._cache.store(lookup, _encode_passages(passages), generation)
            span.set_attribute("rag.retrieval.results", len(passages))
        instruments = self._telemetry.instruments
        instruments.retrieval_duration.record(time.perf_counter() - started)
        instruments.retrieval_results.record(len(passages))
        return passages

    async def _search(
        self, tenant_id: str, kb_id: str, question: str, top_k: int, context: Sequence[str]
    ) -> list[Passage]:
        vector_hits, text_hits = await self.candidates(tenant_id, kb_id, question, top_k, context)
        with stage(self._telemetry, "rag.fusion"):
            return weighted_fusion(vector_hits, text_hits, self._lexical_weight, top_k)

    async def candidates(
        self, tenant_id: str, kb_id: str, question: str, top_k: int, context: Sequence[str] = ()
    ) -> tuple[list[Passage], list[Passage]]:
        """What fusion chooses ``top_k`` passages from: the vector hits at least ``min_similarity`` alike, and
        the full-text hits (also what ``make eval-tune`` fuses with each weight it tries)."""
        # Embedded as typed: WordLlama reads case ("APPLE" is not "apple"), and on SciFact's test queries
        # embedding the case-folded text cost 0.003 nDCG@10 and 0.006 Recall@100. Questions that differ only in
        # case still share cached passages and answers, as the cache keys intend.
        vector = await self._embed_question(tenant_id, question)
        query = question
        if context:
            earlier = " ".join(context)
            vector = normalize_rows((vector + CONTEXT_WEIGHT * await self._embed_question(tenant_id, earlier))[None])[0]
            query = f"{question} {earlier}"
        candidates = max(top_k * 3, MIN_CANDIDATES)
        vector_hits, text_hits = await self._store.hybrid_search(tenant_id, kb_id, vector, query, candidates)
        return [hit for hit in vector_hits if hit.score >= self._min_similarity], text_hits

    async def _embed_question(self, tenant_id: str, question: str) -> Vectors:
        embeddings = self._embeddings
        parts = [embeddings.model, str(embeddings.dimensions), question]
        lookup = await self._cache.lookup("embeddings", tenant_id, parts)
        if lookup.value is not None and len(lookup.value) == embeddings.dimensions * 4:
            cached: Vectors = np.frombuffer(lookup.value, dtype=np.float32)
            return cached
        vector: Vectors = (await embeddings.embed([question], tenant_id))[0].astype(np.float32)
        await self._cache.store(lookup, vector.tobytes())
        return vector
