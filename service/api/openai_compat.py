"""``GET /v1/models`` and ``POST /v1/chat/completions``: OpenAI's Chat Completions over knowledge bases.

Every error of these routes, from the token check to the provider, answers in OpenAI's shape
(``{error: {message, type, code}}``, the problem type as ``code``) with the usual status codes and headers
(``Retry-After`` on 429 and 503), so the ``openai`` SDKs raise their own exception classes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from http import HTTPStatus
from typing import Any

import anyio
import msgspec
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody
from litestar.response import ServerSentEvent, ServerSentEventMessage

from service.admission import admitted_as
from service.api.event_streams import EventStreamOperation
from service.api.hooks import admit, require_json
from service.auth import Principal
from service.errors import RagwatchError, error_facts
from service.openai_compat import CompletionRequest, Completions, ModelList
from service.openai_compat.shapes import Completion, OpenAIError, OpenAIErrorBody

__all__ = ["chat_completions", "models"]

_encode = msgspec.json.Encoder().encode

logger = logging.getLogger("ragwatch.errors")
_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}


def openai_error(request: Request[Any, Any, Any], exc: Exception) -> Response[OpenAIErrorBody]:
    """Any error of these routes in OpenAI's shape."""
    status, headers, body = _error(exc)
    if status == 500:
        logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return Response(body, status_code=status, headers=headers)


def _error(exc: Exception) -> tuple[int, dict[str, str], OpenAIErrorBody]:
    status, slug, detail, headers = error_facts(exc)
    kind = _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return status, headers, OpenAIErrorBody(OpenAIError(message=detail, type=kind, code=slug))


# The classes the app maps to problems, each mapped here too: Litestar picks a handler by the error's class
# before the layer that declared it, so an ``Exception`` entry alone would lose to the app's specific ones.
_HANDLERS: dict[int | type[Exception], Any] = dict.fromkeys(
    (RagwatchError, HTTPException, UnicodeDecodeError, Exception), openai_error
)


def _documented(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI ``responses`` documenting ``statuses`` as OpenAI-shaped errors."""
    return {
        status: ResponseSpec(
            data_container=OpenAIErrorBody, generate_examples=False, description=HTTPStatus(status).phrase
        )
        for status in statuses
    }


@get(
    "/models",
    exception_handlers=_HANDLERS,
    responses=_documented(401, 403),
    tags=["openai"],
    summary="The caller's knowledge bases as OpenAI models (the id of each is the knowledge base's)",
)
async def models(principal: NamedDependency[Principal], completions: NamedDependency[Completions]) -> ModelList:
    return await completions.models(principal)


@post(
    "/chat/completions",
    status_code=200,
    before_request=require_json,
    opt=admitted_as("chat"),
    exception_handlers=_HANDLERS,
    operation_class=EventStreamOperation,
    responses=_documented(400, 401, 403, 404, 413, 415, 429, 502, 503, 504),
    tags=["openai"],
    summary="OpenAI Chat Completions grounded in the knowledge base named by `model`",
)
async def chat_completions(
    data: JSONBody[CompletionRequest],
    request: Request[Principal, Any, Any],
    completions: NamedDependency[Completions],
) -> Response[Any]:
    question = completions.question(data)
    prefetched = await admit(request, "chat", completions.read_keys(request.user, question))
    if not data.stream:
        answer: Completion = await completions.complete(request.user, question, prefetched)
        return Response(answer)
    usage = data.stream_options is not None and data.stream_options.include_usage
    payloads = await completions.chunks(request.user, question, prefetched, usage=usage)
    return ServerSentEvent(_events(payloads), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _events(payloads: AsyncGenerator[bytes, None]) -> AsyncIterator[ServerSentEventMessage]:
    """``data:`` events of the payloads, then OpenAI's ``data: [DONE]``. A failure once the stream has started
    is an ``error`` payload in OpenAI's shape, as OpenAI sends it."""
    try:
        async for payload in payloads:
            yield ServerSentEventMessage(data=payload.decode())
    except Exception as exc:
        status, _, body = _error(exc)
        if status == 500:
            logger.exception("unhandled error in a streamed completion", exc_info=exc)
        yield ServerSentEventMessage(data=_encode(body).decode())
        return
    finally:
        # Runs when the client disconnects too: shielded, so the upstream LLM call is really closed.
        with anyio.CancelScope(shield=True):
            await payloads.aclose()
    yield ServerSentEventMessage(data="[DONE]")
