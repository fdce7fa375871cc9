"""Search: the passages of a knowledge base for a query, without an answer (for clients and evaluation).

The same retrieval as chat (hybrid search, fused by rank, the retrieval cache), the same tenancy checks, rate
limits and telemetry."""

from __future__ import annotations

from service.auth import Principal
from service.chat.retriever import Retriever
from service.knowledge_bases import KnowledgeBases
from service.models import SearchRequest, SearchResults
from telemetry import update_request

__all__ = ["Search"]


class Search:
    def __init__(self, knowledge_bases: KnowledgeBases, retriever: Retriever, *, default_top_k: int) -> None:
        self._knowledge_bases = knowledge_bases
        self._retriever = retriever
        self._default_top_k = default_top_k

    async def search(self, principal: Principal, kb_id: str, request: SearchRequest) -> SearchResults:
        update_request(question_length=len(request.query))
        await self._knowledge_bases.searchable(principal, kb_id)
        top_k = request.top_k or self._default_top_k
        # No generation yet: the retrieval cache reads the knowledge base's own with its entry.
        passages = await self._retriever.retrieve(principal.tenant_id, kb_id, request.query, top_k, None)
        return SearchResults(results=passages)
