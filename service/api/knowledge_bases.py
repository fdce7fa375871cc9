"""``/v1/knowledge-bases``: create, list, inspect and delete the caller's knowledge bases."""

from __future__ import annotations

from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from service.api.hooks import require_json
from service.auth import Principal, requires_admin, requires_member
from service.errors import problem_responses
from service.models import KnowledgeBase, KnowledgeBaseCreate, KnowledgeBaseDetail
from service.rag import RagPipeline
from service.store import KnowledgeBaseRecord

__all__ = ["KnowledgeBaseController", "require_json"]

_ERRORS = problem_responses(400, 401, 403, 404)


def _public(record: KnowledgeBaseRecord) -> KnowledgeBase:
    return KnowledgeBase(id=record.id, name=record.name, description=record.description, created_at=record.created_at)


class KnowledgeBaseController(Controller):
    path = "/knowledge-bases"
    tags = ["knowledge bases"]
    guards = [requires_member]

    @post(
        guards=[requires_admin],
        before_request=require_json,
        summary="Create a knowledge base",
        responses=problem_responses(400, 401, 403, 413, 415),
    )
    async def create(
        self,
        data: JSONBody[KnowledgeBaseCreate],
        principal: NamedDependency[Principal],
        pipeline: NamedDependency[RagPipeline],
    ) -> KnowledgeBase:
        record = await pipeline.store.create_kb(
            principal.tenant_id, data.name.strip(), data.description, pipeline.embedder.model
        )
        return _public(record)

    @get(summary="List the tenant's knowledge bases", responses=problem_responses(401, 403))
    async def list(
        self, principal: NamedDependency[Principal], pipeline: NamedDependency[RagPipeline]
    ) -> list[KnowledgeBase]:
        return [_public(record) for record in await pipeline.store.list_kbs(principal.tenant_id)]

    @get("/{kb_id:str}", summary="A knowledge base with its document and chunk counts", responses=_ERRORS)
    async def detail(
        self, kb_id: FromPath[str], principal: NamedDependency[Principal], pipeline: NamedDependency[RagPipeline]
    ) -> KnowledgeBaseDetail:
        record = await pipeline.knowledge_base(principal, kb_id)
        documents, chunks = await pipeline.store.kb_counts(principal.tenant_id, kb_id)
        return KnowledgeBaseDetail(
            id=record.id,
            name=record.name,
            description=record.description,
            created_at=record.created_at,
            document_count=documents,
            chunk_count=chunks,
        )

    @delete(
        "/{kb_id:str}", guards=[requires_admin], summary="Delete a knowledge base and its documents", responses=_ERRORS
    )
    async def remove(
        self, kb_id: FromPath[str], principal: NamedDependency[Principal], pipeline: NamedDependency[RagPipeline]
    ) -> None:
        await pipeline.delete_knowledge_base(principal, kb_id)
