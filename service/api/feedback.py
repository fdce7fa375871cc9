"""``POST /v1/feedback``: a rating of an answer, named by the answer's trace id."""

from __future__ import annotations

from litestar import post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from service.api.hooks import require_json
from service.auth import Principal
from service.errors import problem_responses
from service.models import FeedbackAccepted, FeedbackCreate
from service.quality.feedback import FeedbackService

__all__ = ["feedback"]


@post(
    "/feedback",
    status_code=201,
    before_request=require_json,
    tags=["quality"],
    summary="Rate an answer up or down (its `trace_id`), with an optional comment",
    responses=problem_responses(400, 401, 403, 404, 413, 415, 503),
)
async def feedback(
    data: JSONBody[FeedbackCreate], principal: NamedDependency[Principal], feedback: NamedDependency[FeedbackService]
) -> FeedbackAccepted:
    return await feedback.give(principal, data)
