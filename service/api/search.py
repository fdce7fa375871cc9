"""``POST /v1/knowledge-bases/{kb_id}/search``: the passages for a query, best first, without an answer."""

from __future__ import annotations

from litestar import post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from service.admission import admitted_as
from service.api.hooks import rate_limited, require_json
from service.auth import Principal
from service.errors import problem_responses
from service.models import SearchRequest, SearchResults
from service.search import Search

__all__ = ["search"]


@post(
    "/knowledge-bases/{kb_id:str}/search",
    status_code=200,
    guards=[rate_limited("search")],
    before_request=require_json,
    opt=admitted_as("search"),
    tags=["search"],
    summary="The passages of a knowledge base that match a query, best first (no answer)",
    responses=problem_responses(400, 401, 403, 404, 409, 413, 415, 429, 503),
)
async def search(
    kb_id: FromPath[str],
    data: JSONBody[SearchRequest],
    principal: NamedDependency[Principal],
    search: NamedDependency[Search],
) -> SearchResults:
    return await search.search(principal, kb_id, data)
