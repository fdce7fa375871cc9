"""What the API answers, as typed msgspec Structs that mirror the server's shapes.

Decoding ignores fields these Structs do not name, so a server that adds a field breaks no client; a field
added after the first release has a default, so an older server that lacks it still decodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar

import msgspec

if TYPE_CHECKING:
    from ragwatch_client._errors import RagwatchError

__all__ = [
    "AnswerDelta",
    "AnswerDone",
    "ChatEvent",
    "ChatResponse",
    "Conversation",
    "DocumentCreated",
    "DocumentDetail",
    "DocumentSummary",
    "FeedbackAccepted",
    "KnowledgeBase",
    "KnowledgeBaseDetail",
    "Page",
    "Passage",
    "Problem",
    "Reindexed",
    "SearchResults",
    "Turn",
    "UploadResult",
    "Usage",
]

T = TypeVar("T")


class KnowledgeBase(msgspec.Struct, frozen=True):
    id: str
    name: str
    description: str
    created_at: str
    """When it was created (ISO 8601)."""


class KnowledgeBaseDetail(KnowledgeBase, frozen=True):
    document_count: int
    chunk_count: int


class Reindexed(msgspec.Struct, frozen=True):
    kb_id: str
    embedding_model: str
    """The embedder every chunk is embedded with now."""
    previous_embedding_model: str
    chunks: int
    """Chunks embedded again (0: the knowledge base already used the server's embedder)."""


class DocumentCreated(msgspec.Struct, frozen=True):
    document_id: str
    chunks: int
    replaced: bool
    """Whether a document with this id existed and was replaced."""


class DocumentSummary(msgspec.Struct, frozen=True):
    document_id: str
    title: str
    chunks: int
    bytes: int
    metadata: dict[str, Any]
    created_at: str


class DocumentDetail(DocumentSummary, frozen=True):
    text: str
    """The document's full text, as it was extracted."""


class Passage(msgspec.Struct, frozen=True):
    """A chunk of a document as retrieval found it: a search result, or a citation of an answer."""

    document_id: str
    chunk_id: str
    title: str
    score: float
    """The fused retrieval score, 0..1 (1: best in both full-text and vector search)."""
    text: str
    page: int | None = None
    """The PDF page the chunk is on (from 1); ``None`` for formats without pages."""
    section: str | None = None
    """The headings above the chunk, outermost first (``"Install > Linux"``)."""
    created_at: str | None = None


class SearchResults(msgspec.Struct, frozen=True):
    results: list[Passage]
    """Best first."""


class FeedbackAccepted(msgspec.Struct, frozen=True):
    trace_id: str
    kb_id: str
    rating: str
    created_at: str


class Usage(msgspec.Struct, frozen=True):
    input_tokens: int
    output_tokens: int


class _Answered(msgspec.Struct, frozen=True):
    """What a whole answer and a stream's last event both carry."""

    citations: list[Passage]
    """The passages the answer cites: ``[n]`` in its text is ``citations[n - 1]``."""
    model: str
    usage: Usage
    trace_id: str
    """The request's trace id: find its spans and logs with it."""
    cached: bool = False
    """Whether the answer came from the server's answer cache (no LLM call was made for it)."""
    finish_reason: str = "stop"
    """``stop``, or ``length`` when the answer was cut at its token limit."""
    conversation_id: str | None = None
    """The conversation this turn was recorded in, when the question named one."""


class ChatResponse(_Answered, frozen=True, kw_only=True):
    answer: str


class AnswerDelta(msgspec.Struct, frozen=True):
    """A piece of a streamed answer's text."""

    text: str


class AnswerDone(_Answered, frozen=True):
    """The last event of a streamed answer."""


ChatEvent: TypeAlias = AnswerDelta | AnswerDone
"""What :meth:`Client.chat_stream` yields: deltas, then one :class:`AnswerDone`."""


class Turn(msgspec.Struct, frozen=True):
    """One question of a conversation and its answer."""

    question: str
    answer: str
    citations: list[Passage]
    trace_id: str
    created_at: str


class Conversation(msgspec.Struct, frozen=True):
    id: str
    turns: list[Turn]
    """Oldest first."""


class Page(msgspec.Struct, Generic[T], frozen=True):
    """One page of a list; ``next_cursor`` fetches the next one (``None``: this is the last)."""

    data: list[T]
    next_cursor: str | None = None


class Problem(msgspec.Struct, frozen=True):
    """An RFC 9457 problem: the body of every error response, and of a stream's ``error`` event."""

    type: str = "about:blank"
    title: str = ""
    status: int | None = None
    detail: str = ""
    errors: list[dict[str, Any]] = msgspec.field(default_factory=list)
    """What failed validation, on a 400 for an invalid body."""
    trace_id: str | None = None


@dataclass(frozen=True)
class UploadResult:
    """What became of one file of a folder upload: its ``document``, or the ``error`` that refused it."""

    path: Path
    document: DocumentCreated | None = None
    error: RagwatchError | OSError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None
