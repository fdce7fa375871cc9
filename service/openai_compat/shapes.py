"""The OpenAI Chat Completions shapes the compatible routes read and write (the subset clients use).

Requests are read leniently, as OpenAI's own API reads them: fields this service has no use for (``n``,
``top_p``, ``tools``…) are ignored rather than refused, so any OpenAI client can send what it sends.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from service.models import Passage

__all__ = [
    "Choice",
    "ChunkChoice",
    "Completion",
    "CompletionChunk",
    "CompletionRequest",
    "CompletionUsage",
    "Delta",
    "Message",
    "Model",
    "ModelList",
    "OpenAIError",
    "OpenAIErrorBody",
    "RequestMessage",
    "StreamOptions",
]


class RequestMessage(msgspec.Struct):
    role: str
    content: str | list[dict[str, Any]] | None = None
    """Text, or a list of content parts of which the ``text`` ones are read."""


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class CompletionRequest(msgspec.Struct):
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    """The knowledge base's id."""
    messages: Annotated[list[RequestMessage], msgspec.Meta(min_length=1, max_length=200)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    user: str | None = None


class Model(msgspec.Struct):
    id: str
    created: int
    owned_by: str
    object: Literal["model"] = "model"


class ModelList(msgspec.Struct):
    data: list[Model]
    object: Literal["list"] = "list"


class CompletionUsage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Message(msgspec.Struct):
    content: str
    role: Literal["assistant"] = "assistant"


class Choice(msgspec.Struct):
    message: Message
    finish_reason: str = "stop"
    index: int = 0


class Completion(msgspec.Struct):
    """A whole answer: a standard ``chat.completion``, with ``citations`` and ``trace_id`` as extensions."""

    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    citations: list[Passage]
    trace_id: str
    object: Literal["chat.completion"] = "chat.completion"


class Delta(msgspec.Struct, omit_defaults=True):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(msgspec.Struct):
    delta: Delta
    finish_reason: str | None = None
    index: int = 0


class CompletionChunk(msgspec.Struct):
    """One event of a streamed answer; the last one with choices carries ``citations`` and ``trace_id``."""

    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
    citations: list[Passage] | None = None
    trace_id: str | None = None
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"


class OpenAIError(msgspec.Struct):
    message: str
    type: str
    code: str
    param: str | None = None


class OpenAIErrorBody(msgspec.Struct):
    """What every error of the compatible routes answers: OpenAI's ``{error: {message, type, code}}``."""

    error: OpenAIError
