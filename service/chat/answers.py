"""What a chat produces: answer deltas, the closing event, and the answer as the cache keeps it."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from service.models import ChatResponse, Passage, Usage
from service.providers import NO_ANSWER, Answer
from telemetry import current_trace_id

__all__ = ["AnswerDelta", "AnswerDone", "AnswerRecord", "decode_record", "encode_record"]


class AnswerDelta(msgspec.Struct, frozen=True):
    """A piece of the answer's text (a streamed answer arrives as many, a whole one as one)."""

    text: str


class AnswerDone(msgspec.Struct, frozen=True):
    """The event that closes a streamed answer."""

    citations: list[Passage]
    model: str
    usage: Usage
    trace_id: str
    cached: bool
    finish_reason: str = "stop"
    conversation_id: str | None = None


class AnswerRecord(msgspec.Struct, frozen=True):
    """An answer as the answer cache keeps it and as identical concurrent requests share it."""

    answer: str
    citations: list[Passage]
    model: str
    usage: Usage
    finish_reason: str = "stop"
    """``stop``, or ``length`` when the answer was cut at the requested ``max_tokens``."""

    @classmethod
    def of(cls, answer: Answer, passages: Sequence[Passage]) -> AnswerRecord:
        """The record of ``answer``, citing ``passages`` unless it says the knowledge base does not say."""
        usage = Usage(input_tokens=answer.input_tokens, output_tokens=answer.output_tokens)
        citations = [] if answer.text.strip() == NO_ANSWER else list(passages)
        return cls(
            answer=answer.text,
            citations=citations,
            model=answer.model,
            usage=usage,
            finish_reason="length" if answer.finish_reason == "length" else "stop",
        )

    def response(self, *, cached: bool, conversation_id: str | None = None) -> ChatResponse:
        return ChatResponse(
            answer=self.answer,
            citations=self.citations,
            model=self.model,
            usage=self.usage,
            trace_id=current_trace_id(),
            cached=cached,
            finish_reason=self.finish_reason,
            conversation_id=conversation_id,
        )

    def done(self, *, cached: bool, conversation_id: str | None = None) -> AnswerDone:
        return AnswerDone(
            citations=self.citations,
            model=self.model,
            usage=self.usage,
            trace_id=current_trace_id(),
            cached=cached,
            finish_reason=self.finish_reason,
            conversation_id=conversation_id,
        )


encode_record = msgspec.msgpack.Encoder().encode
decode_record = msgspec.msgpack.Decoder(AnswerRecord).decode
