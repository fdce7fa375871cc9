"""``POST /v1/knowledge-bases/{kb_id}/reindex``: every chunk embedded again with the service's embedder."""

from __future__ import annotations

from litestar import post
from litestar.di import NamedDependency
from litestar.params import FromPath

from service.admission import admitted_as
from service.api.hooks import rate_limited
from service.audit import audited
from service.auth import ADMINS_ONLY, Principal
from service.errors import problem_responses
from service.models import Reindexed
from service.reindexing import Reindexing

__all__ = ["reindex"]


@post(
    "/knowledge-bases/{kb_id:str}/reindex",
    status_code=200,
    opt={**ADMINS_ONLY, **admitted_as("ingest"), **audited("knowledge_base.reindex", target="kb_id")},
    guards=[rate_limited("ingest")],
    tags=["knowledge bases"],
    summary="Embed every chunk again with the embedder the service uses now (after switching embedders)",
    responses=problem_responses(400, 401, 403, 404, 429, 502, 503),
)
async def reindex(
    kb_id: FromPath[str], principal: NamedDependency[Principal], reindexing: NamedDependency[Reindexing]
) -> Reindexed:
    return await reindexing.reindex(principal, kb_id)
