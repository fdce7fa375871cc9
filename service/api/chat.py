"""``POST /v1/chat``: a cited answer, whole or as Server-Sent Events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec
from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody
from litestar.response import ServerSentEvent, ServerSentEventMessage

from service.api.hooks import admit, require_json
from service.auth import Principal, requires_member
from service.errors import PROBLEM_BASE, RagwatchError, problem_responses
from service.models import ChatRequest, ChatResponse
from service.rag import AnswerDelta, AnswerDone, RagPipeline

__all__ = ["chat"]

_encode = msgspec.json.Encoder().encode


def wants_stream(data: ChatRequest, request: Request[Any, Any, Any]) -> bool:
    return data.stream or "text/event-stream" in request.headers.get("accept", "")


@post(
    "/chat",
    status_code=200,
    guards=[requires_member],
    before_request=require_json,
    tags=["chat"],
    summary="Answer a question from a knowledge base, with citations",
    description=(
        "With `stream: true` or `Accept: text/event-stream` the answer arrives as Server-Sent Events: "
        "`delta` events `{text}`, then one `done` event `{citations, model, usage, trace_id}`; a failure "
        "after the stream started arrives as an `error` event holding a problem object."
    ),
    responses={
        200: ResponseSpec(data_container=ChatResponse, description="The answer (JSON or an SSE stream)"),
        **problem_responses(400, 401, 403, 404, 413, 415, 429, 502, 503, 504),
    },
)
async def chat(
    data: JSONBody[ChatRequest], request: Request[Principal, Any, Any], pipeline: NamedDependency[RagPipeline]
) -> Response[Any]:
    # The caller comes from ``request.user`` rather than the ``principal`` dependency the other routes take:
    # with two dependencies Litestar resolves them in an anyio task group, on every chat.
    principal = request.user
    # The rate limit, and the answer cache's read in the same round trip to Redis.
    prefetched = await admit(request, "chat", pipeline.answer_read_keys(principal, data))
    if not wants_stream(data, request):
        return Response(await pipeline.chat(principal, data, prefetched))
    events = pipeline.chat_events(principal, data, prefetched)
    # Wait for the first event so that a failure before any text (unknown knowledge base, provider
    # down) is still an ordinary problem response with the right status code.
    first = await anext(events)
    return ServerSentEvent(_sse(first, events), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _sse(
    first: AnswerDelta | AnswerDone, events: AsyncIterator[AnswerDelta | AnswerDone]
) -> AsyncIterator[ServerSentEventMessage]:
    try:
        yield _message(first)
        async for event in events:
            yield _message(event)
    except RagwatchError as exc:
        problem = {"type": PROBLEM_BASE + exc.slug, "title": exc.title, "status": exc.status}
        yield ServerSentEventMessage(event="error", data=_encode({**problem, "detail": exc.detail}).decode())
    finally:
        # Runs when the client disconnects too: shielded, so the upstream LLM call is really closed.
        with anyio.CancelScope(shield=True):
            await events.aclose()  # type: ignore[attr-defined]


def _message(event: AnswerDelta | AnswerDone) -> ServerSentEventMessage:
    name = "delta" if isinstance(event, AnswerDelta) else "done"
    return ServerSentEventMessage(event=name, data=_encode(event).decode())
