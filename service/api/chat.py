"""``POST /v1/chat``: a cited answer, whole or as Server-Sent Events."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio
import msgspec
from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody
from litestar.response import ServerSentEvent, ServerSentEventMessage

from service.admission import admitted_as
from service.api.event_streams import EventStreamOperation
from service.api.hooks import admit, require_json
from service.auth import Principal
from service.chat import AnswerDelta, AnswerDone, Chat
from service.errors import RagwatchError, problem, problem_responses
from service.models import ChatRequest, ChatResponse

__all__ = ["chat"]

_encode = msgspec.json.Encoder().encode


@post(
    "/chat",
    status_code=200,
    before_request=require_json,
    opt=admitted_as("chat"),
    operation_class=EventStreamOperation,
    tags=["chat"],
    summary="Answer a question from a knowledge base, with citations",
    description=(
        "With `stream: true` or `Accept: text/event-stream` the answer arrives as Server-Sent Events: "
        "`delta` events `{text}`, then one `done` event `{citations, model, usage, trace_id, cached, "
        "finish_reason, conversation_id}`; a failure after the stream started arrives as an `error` event "
        "holding a problem object. With `conversation_id` the question is read in the conversation's earlier "
        "questions, and the answer kept as its next turn (`GET /v1/conversations/{id}`)."
    ),
    responses={
        200: ResponseSpec(data_container=ChatResponse, description="The answer (JSON or an SSE stream)"),
        **problem_responses(400, 401, 403, 404, 413, 415, 429, 502, 503, 504),
    },
)
async def chat(
    data: JSONBody[ChatRequest], request: Request[Principal, Any, Any], chat: NamedDependency[Chat]
) -> Response[Any]:
    # The caller comes from ``request.user`` rather than the ``principal`` dependency the other routes take:
    # with two dependencies Litestar resolves them in an anyio task group, on every chat. The rate limit
    # reads the answer cache's keys in its own round trip to Redis.
    question = await chat.question(request.user, data)
    prefetched = await admit(request, "chat", chat.read_keys(request.user, question))
    if not (data.stream or "text/event-stream" in request.headers.get("accept", "")):
        return Response(await chat.answer(request.user, question, prefetched))
    return await stream(chat.events(request.user, question, prefetched))


async def stream(events: AsyncGenerator[AnswerDelta | AnswerDone, None]) -> Response[Any]:
    """Server-Sent Events of ``events``. The first event is awaited before answering, so that a failure before
    any text (unknown knowledge base, provider down) is still an ordinary problem response with its status."""
    first = await anext(events)
    return ServerSentEvent(_sse(first, events), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _sse(
    first: AnswerDelta | AnswerDone, events: AsyncGenerator[AnswerDelta | AnswerDone, None]
) -> AsyncIterator[ServerSentEventMessage]:
    try:
        yield _message(first)
        async for event in events:
            yield _message(event)
    except RagwatchError as exc:
        yield ServerSentEventMessage(event="error", data=_encode(problem(exc)).decode())
    finally:
        # Runs when the client disconnects too: shielded, so the upstream LLM call is really closed.
        with anyio.CancelScope(shield=True):
            await events.aclose()


def _message(event: AnswerDelta | AnswerDone) -> ServerSentEventMessage:
    name = "delta" if isinstance(event, AnswerDelta) else "done"
    return ServerSentEventMessage(event=name, data=_encode(event).decode())
