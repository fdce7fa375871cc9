"""The two interfaces every provider implements: an embedder and an answerer."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

import msgspec
import numpy as np
import numpy.typing as npt

from service.models import Passage

__all__ = [
    "DEFAULT_GENERATION",
    "PROMPT_VERSION",
    "REWRITE_GENERATION",
    "SYSTEM_PROMPT",
    "Answer",
    "AnswerStream",
    "Answerer",
    "Embedder",
    "Generation",
    "Passage",
    "QuestionRewriter",
    "Vectors",
    "build_user_prompt",
    "count_tokens",
    "is_remote",
    "normalize_rows",
]

Vectors = npt.NDArray[np.float32]

SYSTEM_PROMPT = (
    "You answer questions using only the numbered context passages provided. "
    "Cite every statement with the passage numbers it comes from, like [1] or [2][3]. "
    "If the passages do not contain the answer, say that the knowledge base does not say, "
    "and do not guess or use outside knowledge."
)


class Answer(msgspec.Struct):
    text: str
    model: str
    input_tokens: int
    output_tokens: int
    finish_reason: str
    response_id: str | None = None
    """The provider's id of the completion (``chatcmpl-…``), when it gives one."""


class Generation(msgspec.Struct, frozen=True):
    """How the caller wants the answer generated (``/v1/chat/completions``' ``max_tokens``, ``temperature``);
    ``None``: the provider's default. Part of the answer-cache key when set."""

    max_tokens: int | None = None
    temperature: float | None = None

    def key(self) -> str:
        """The cache-key part of these options ("" for the defaults, so plain requests keep their keys)."""
        if self.max_tokens is None and self.temperature is None:
            return ""
        return f"max_tokens={self.max_tokens}/temperature={self.temperature}"


DEFAULT_GENERATION = Generation()
REWRITE_GENERATION = Generation(max_tokens=200, temperature=0.0)
"""What a follow-up's rewrite into a standalone question is asked with: short, and not sampled."""


class Embedder(Protocol):
    provider: str
    model: str
    dimensions: int

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """One L2-normalised row per text, ``dimensions`` wide."""
        ...


class AnswerStream(Protocol):
    """Text deltas of an answer; ``result`` is filled in once the stream is exhausted."""

    result: Answer | None

    def __aiter__(self) -> AsyncIterator[str]: ...

    async def aclose(self) -> None:
        """Stop generating and release the upstream call (a client went away)."""
        ...


class Answerer(Protocol):
    provider: str
    model: str
    version: str
    """Changes whenever the answerer would answer the same passages differently (part of the answer-cache key,
    so a deploy never serves answers of the previous behaviour)."""

    def effective(self, generation: Generation) -> Generation:
        """What the answerer really asks for when ``generation`` is asked of it (its caps and defaults)."""
        ...

    async def answer(self, question: str, passages: Sequence[Passage], generation: Generation = ...) -> Answer: ...

    async def stream(
        self, question: str, passages: Sequence[Passage], generation: Generation = ...
    ) -> AnswerStream: ...


@runtime_checkable
class QuestionRewriter(Protocol):
    """An answerer that can turn a follow-up into a standalone question (LLM providers; the offline
    answerer cannot, and retrieval weighs the earlier questions in instead)."""

    async def rewrite(self, question: str, earlier: Sequence[str], generation: Generation) -> Answer:
        """``question`` made standalone from ``earlier`` (the conversation's questions, oldest first)."""
        ...


_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """Approximate token count (words and punctuation) for providers that report none."""
    return len(_TOKEN.findall(text))


def normalize_rows(vectors: Vectors) -> Vectors:
    """Scale each row to unit length in place (all-zero rows stay zero), so cosine is a dot product."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.divide(vectors, norms, out=vectors, where=norms > 0)
    return vectors


def is_remote(provider: Embedder | Answerer) -> bool:
    """Whether calls leave the process (a client span) or run in it (the offline default: an internal span)."""
    return provider.provider != "ragwatch"


def build_user_prompt(question: str, passages: Sequence[Passage]) -> str:
    context = "\n\n".join(f"[{n}] {p.title}\n{p.text}" for n, p in enumerate(passages, start=1))
    return f"Context passages:\n\n{context}\n\nQuestion: {question}"


def _prompt_version() -> str:
    """A digest of the system prompt and of a sample user prompt: changes whenever either one does."""
    sample = Passage(document_id="document", chunk_id="chunk", title="title", score=1.0, text="text")
    sample_prompt = build_user_prompt("question", [sample])
    return hashlib.sha256(f"{SYSTEM_PROMPT}\x1f{sample_prompt}".encode()).hexdigest()[:12]


PROMPT_VERSION = _prompt_version()
"""Part of every answer-cache key, so answers made from an older prompt are never served for a newer one."""
