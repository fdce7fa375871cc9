"""A question as chat asks it of a knowledge base, whichever route it came through."""

from __future__ import annotations

from dataclasses import dataclass

from service.models import ChatRequest
from service.providers import DEFAULT_GENERATION, Generation

__all__ = ["Question"]


@dataclass(frozen=True, slots=True)
class Question:
    kb_id: str
    text: str
    top_k: int
    context: tuple[str, ...] = ()
    """The conversation's earlier questions, oldest first: what a follow-up is read in."""
    generation: Generation = DEFAULT_GENERATION
    conversation_id: str | None = None
    """The conversation to keep the turn in (``/v1/chat``'s ``conversation_id``)."""
    probe: bool = False
    """Asked by a golden-question probe: answered afresh (never from the answer cache) and kept out of the
    user-facing answer and quality metrics."""

    @classmethod
    def of(cls, request: ChatRequest, default_top_k: int, context: tuple[str, ...] = ()) -> Question:
        return cls(
            kb_id=request.kb_id,
            text=request.question,
            top_k=request.top_k or default_top_k,
            context=context,
            conversation_id=request.conversation_id,
        )
