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
from dataclasses import replace
from datetime import datetime

import msgspec

from service.auth import Principal
from service.chat import AnswerDelta, Chat, Question
from service.conversations import earlier_questions
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
from service.providers import Generation
from telemetry import current_trace_id

__all__ = ["Completions", "sources_text"]

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

    def question(self, body: CompletionRequest) -> Question:
        """The question a completion asks (400 when it holds none): its last user message, read in the user
        messages before it (:func:`~service.conversations.earlier_questions`), with its generation options."""
        users = [_text(m.content) for m in body.messages if m.role == "user"]
        question = users[-1] if users else ""
        try:
            request = msgspec.convert({"kb_id": body.model, "question": question}, ChatRequest)
        except msgspec.ValidationError as exc:
            raise BadRequest(f"Not a question for a knowledge base: {exc} (model is the knowledge base id, and "
                             "the last user message the question).") from None  # fmt: skip
        generation = Generation(max_tokens=body.max_completion_tokens or body.max_tokens, temperature=body.temperature)
        context = earlier_questions(users[:-1])
        return replace(Question.of(request, self._chat.default_top_k, context), generation=generation)

    def read_keys(self, principal: Principal, question: Question) -> list[str]:
        return self._chat.read_keys(principal, question)

    async def complete(
        self, principal: Principal, question: Question, prefetched: Sequence[bytes | None] | None
    ) -> Completion:
        answer = await self._chat.answer(principal, question, prefetched)
        return Completion(
            id=_completion_id(answer.trace_id),
            created=int(time.time()),
            model=question.kb_id,
            choices=[Choice(Message(answer.answer + self._appendix(answer.citations)), answer.finish_reason)],
            usage=_usage(answer.usage),
            citations=answer.citations,
            trace_id=answer.trace_id,
        )

    async def chunks(
        self, principal: Principal, question: Question, prefetched: Sequence[bytes | None] | None, *, usage: bool
    ) -> AsyncGenerator[bytes, None]:
        """The answer as ``chat.completion.chunk`` payloads; the first one is produced before any is sent, so
        that a failure before the answer starts is an ordinary error response."""
        events = self._chat.events(principal, question, prefetched)
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
                        yield _encode(self._chunk(trace_id, created, question, [ChunkChoice(delta)]))
                    else:
                        appendix = self._appendix(event.citations) or None
                        closing = ChunkChoice(Delta(content=appendix), event.finish_reason)
                        final = self._chunk(trace_id, created, question, [closing])
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

    def _chunk(self, trace_id: str, created: int, question: Question, choices: list[ChunkChoice]) -> CompletionChunk:
        return CompletionChunk(id=_completion_id(trace_id), created=created, model=question.kb_id, choices=choices)

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
