"""``/v1/knowledge-bases``: create, list, inspect and delete the caller's knowledge bases."""

from __future__ import annotations

from litestar import Controller, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from service.api.hooks import require_json
from service.api.idempotency import IdempotencyKey, created
from service.api.paging import Cursor, Limit
from service.audit import audited
from service.auth import ADMINS_ONLY, Principal
from service.errors import problem_responses
from service.knowledge_bases import KnowledgeBases
from service.models import KnowledgeBase, KnowledgeBaseCreate, KnowledgeBaseDetail, KnowledgeBasePage
from service.pagination import DEFAULT_LIMIT

__all__ = ["KnowledgeBaseController"]

_ERRORS = problem_responses(400, 401, 403, 404)


class KnowledgeBaseController(Controller):
    path = "/knowledge-bases"
    tags = ["knowledge bases"]

    @post(
        opt={**ADMINS_ONLY, **audited("knowledge_base.create", target="id")},
        before_request=require_json,
        summary="Create a knowledge base",
        responses=problem_responses(400, 401, 403, 409, 413, 415, 422, 503),
    )
    async def create(
        self,
        data: JSONBody[KnowledgeBaseCreate],
        principal: NamedDependency[Principal],
        knowledge_bases: NamedDependency[KnowledgeBases],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[KnowledgeBase]:
        return created(await knowledge_bases.create(principal, data, idempotency_key))

    @get(summary="List the tenant's knowledge bases, a page at a time", responses=problem_responses(400, 401, 403))
    async def list(
        self,
        principal: NamedDependency[Principal],
        knowledge_bases: NamedDependency[KnowledgeBases],
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> KnowledgeBasePage:
        return await knowledge_bases.list_page(principal, limit, cursor)

    @get("/{kb_id:str}", summary="A knowledge base with its document and chunk counts", responses=_ERRORS)
    async def detail(
        self,
        kb_id: FromPath[str],
        principal: NamedDependency[Principal],
        knowledge_bases: NamedDependency[KnowledgeBases],
    ) -> KnowledgeBaseDetail:
        return await knowledge_bases.detail(principal, kb_id)

    @delete(
        "/{kb_id:str}",
        opt={**ADMINS_ONLY, **audited("knowledge_base.delete", target="kb_id")},
        summary="Delete a knowledge base and its documents",
        responses=_ERRORS,
    )
    async def remove(
        self,
        kb_id: FromPath[str],
        principal: NamedDependency[Principal],
        knowledge_bases: NamedDependency[KnowledgeBases],
    ) -> None:
        await knowledge_bases.delete(principal, kb_id)
