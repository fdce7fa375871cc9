"""Chat Completions over a knowledge base: the ``model`` is the knowledge base, the last user message the
question, and the answer is exactly ``/v1/chat``'s (same retrieval, caches, limits, telemetry and trace); the
earlier user messages are the context retrieval reads a follow-up in.

Standard clients show only ``content``, so the answer's sources travel in the text too: its ``[n]`` markers,
and a short "Sources" list appended to it (``RAGWATCH_OPENAI_SOURCES``), besides the structured ``citations``
array that clients which know this service can read.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime

import msgspec

from service.auth import Principal
from service.chat import AnswerDelta, Chat
from service.errors import BadRequest
from service.knowledge_bases import KnowledgeBases
from service.models import ChatRequest, Passage, Usage
from service.openai_compat.shapes import (
    Choice,
    ChunkChoice,
    Completion,
    CompletionChunk,
    CompletionRequest,
    CompletionUsage,
    Delta,
    Message,
    Model,
    ModelList,
)
from telemetry import current_trace_id

__all__ = ["CONTEXT_CHARACTERS", "CONTEXT_TURNS", "Completions", "sources_text"]

CONTEXT_TURNS = 3
"""Earlier user messages of a conversation that retrieval takes into account."""
CONTEXT_CHARACTERS = 4000
"""What of each earlier message retrieval reads (a question may be as long)."""

_encode = msgspec.json.Encoder().encode


class Completions:
    def __init__(self, knowledge_bases: KnowledgeBases, chat: Chat, *, sources: bool) -> None:
        self._knowledge_bases = knowledge_bases
        self._chat = chat
        self._sources = sources

    async def models(self, principal: Principal) -> ModelList:
        """One model per knowledge base of the caller's tenant."""
        bases = await self._knowledge_bases.list_all(principal)
        return ModelList(
            data=[Model(id=kb.id, created=_unix(kb.created_at), owned_by=principal.tenant_id) for kb in bases]
        )

    def chat_request(self, body: CompletionRequest) -> ChatRequest:
        """The ``/v1/chat`` request a completion asks for (400 when it holds no question)."""
        question = next((_text(m.content) for m in reversed(body.messages) if m.role == "user"), "")
        try:
            return msgspec.convert({"kb_id": body.model, "question": question, "stream": body.stream}, ChatRequest)
        except msgspec.ValidationError as exc:
            raise BadRequest(f"Not a question for a knowledge base: {exc} (model is the knowledge base id, and "
                             "the last user message the question).") from None  # fmt: skip

    def read_keys(self, principal: Principal, request: ChatRequest, context: Sequence[str]) -> list[str]:
        return self._chat.read_keys(principal, request, context)

    def context(self, body: CompletionRequest) -> list[str]:
        """The user messages before the question (at most :data:`CONTEXT_TURNS`, oldest first, each cut to
        :data:`CONTEXT_CHARACTERS`): what a follow-up refers to."""
        users = [_text(m.content) for m in body.messages if m.role == "user"]
        earlier = [turn[:CONTEXT_CHARACTERS] for turn in users[:-1] if turn.strip()]
        return earlier[-CONTEXT_TURNS:]

    async def complete(
        self,
        principal: Principal,
        request: ChatRequest,
        prefetched: Sequence[bytes | None] | None,
        context: Sequence[str],
    ) -> Completion:
        answer = await self._chat.answer(principal, request, prefetched, context)
        return Completion(
            id=_completion_id(answer.trace_id),
            created=int(time.time()),
            model=request.kb_id,
            choices=[Choice(Message(answer.answer + self._appendix(answer.citations)))],
            usage=_usage(answer.usage),
            citations=answer.citations,
            trace_id=answer.trace_id,
        )

    async def chunks(
        self,
        principal: Principal,
        request: ChatRequest,
        prefetched: Sequence[bytes | None] | None,
        context: Sequence[str],
        *,
        usage: bool,
    ) -> AsyncGenerator[bytes, None]:
        """The answer as ``chat.completion.chunk`` payloads; the first one is produced before any is sent, so
        that a failure before the answer starts is an ordinary error response."""
        events = self._chat.events(principal, request, prefetched, context)
        created = int(time.time())
        trace_id = current_trace_id()
        first = await anext(events)

        async def payloads() -> AsyncGenerator[bytes, None]:
            try:
                event = first
                opened = False
                while True:
                    if isinstance(event, AnswerDelta):
                        delta = Delta(role=None if opened else "assistant", content=event.text)
                        opened = True
                        yield _encode(self._chunk(trace_id, created, request, [ChunkChoice(delta)]))
                    else:
                        closing = ChunkChoice(Delta(content=self._appendix(event.citations) or None), "stop")
                        final = self._chunk(trace_id, created, request, [closing])
                        final.citations, final.trace_id = event.citations, event.trace_id
                        yield _encode(final)
                        if usage:
                            yield _encode(msgspec.structs.replace(final, choices=[], usage=_usage(event.usage),
                                                                  citations=None))  # fmt: skip
                        return
                    event = await anext(events)
            finally:
                await events.aclose()

        return payloads()

    def _chunk(self, trace_id: str, created: int, request: ChatRequest, choices: list[ChunkChoice]) -> CompletionChunk:
        return CompletionChunk(id=_completion_id(trace_id), created=created, model=request.kb_id, choices=choices)

    def _appendix(self, citations: Sequence[Passage]) -> str:
        return sources_text(citations) if self._sources and citations else ""


def sources_text(citations: Sequence[Passage]) -> str:
    """The "Sources" list appended to an answer: ``[n] Title, p. 3``, numbered like the ``[n]`` markers."""
    lines = [
        f"[{number}] {passage.title}" + (f", p. {passage.page}" if passage.page else "")
        for number, passage in enumerate(citations, start=1)
    ]
    return "\n\nSources:\n" + "\n".join(lines)


def _text(content: str | list[dict[str, object]] | None) -> str:
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if part.get("type") == "text")
    return content or ""


def _usage(usage: Usage) -> CompletionUsage:
    return CompletionUsage(usage.input_tokens, usage.output_tokens, usage.input_tokens + usage.output_tokens)


def _completion_id(trace_id: str) -> str:
    return f"chatcmpl-{trace_id}"


def _unix(iso: str) -> int:
    try:
        return int(datetime.fromisoformat(iso).timestamp())
    except ValueError:
        return 0
