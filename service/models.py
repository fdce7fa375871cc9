"""Request and response bodies of the HTTP API (msgspec Structs, so OpenAPI is generated from them)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "ID_PATTERN",
    "MAX_TITLE_LENGTH",
    "ChatRequest",
    "ChatResponse",
    "Conversation",
    "ConversationTurn",
    "DocumentCreate",
    "DocumentCreated",
    "DocumentPage",
    "DocumentSummary",
    "FeedbackAccepted",
    "FeedbackCreate",
    "HealthCheck",
    "KnowledgeBase",
    "KnowledgeBaseCreate",
    "KnowledgeBaseDetail",
    "KnowledgeBasePage",
    "Passage",
    "Probe",
    "ProbeCreate",
    "ProbeExpectation",
    "ProbeList",
    "ProbeResult",
    "Problem",
    "Readiness",
    "Reindexed",
    "SearchRequest",
    "SearchResults",
    "Usage",
]

MAX_TITLE_LENGTH = 500
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Every id that reaches a LanceDB filter matches this: no quote, space or operator can get through."""

Identifier = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, description="Letters, digits, '_', '.', '-'")]
NonBlank = Annotated[str, msgspec.Meta(min_length=1, pattern=r"\S")]


class KnowledgeBaseCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[NonBlank, msgspec.Meta(max_length=200)]
    description: Annotated[str, msgspec.Meta(max_length=2000)] = ""


class KnowledgeBase(msgspec.Struct):
    id: str
    name: str
    description: str
    created_at: str


class Reindexed(msgspec.Struct):
    kb_id: str
    embedding_model: str
    """The embedder every chunk is embedded with now."""
    previous_embedding_model: str
    chunks: int
    """Chunks embedded again (0 when the knowledge base already used the current embedder)."""


class KnowledgeBasePage(msgspec.Struct):
    data: list[KnowledgeBase]
    """Oldest first."""
    next_cursor: str | None
    """Pass it as ``cursor`` for the next page; ``null`` on the last page."""


class KnowledgeBaseDetail(KnowledgeBase):
    document_count: int
    chunk_count: int


class DocumentCreate(msgspec.Struct, forbid_unknown_fields=True):
    title: Annotated[NonBlank, msgspec.Meta(max_length=MAX_TITLE_LENGTH)]
    text: NonBlank
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    id: Identifier | None = None


class DocumentCreated(msgspec.Struct):
    document_id: str
    chunks: int
    replaced: bool


class DocumentSummary(msgspec.Struct):
    document_id: str
    title: str
    chunks: int
    bytes: int
    metadata: dict[str, Any]
    created_at: str


class DocumentPage(msgspec.Struct):
    data: list[DocumentSummary]
    """Oldest first (a replaced document counts as new)."""
    next_cursor: str | None
    """Pass it as ``cursor`` for the next page; ``null`` on the last page."""


class DocumentDetail(DocumentSummary):
    text: str


class ChatRequest(msgspec.Struct, forbid_unknown_fields=True):
    kb_id: Identifier
    question: Annotated[NonBlank, msgspec.Meta(max_length=4000)]
    top_k: Annotated[int, msgspec.Meta(ge=1, le=50)] | None = None
    stream: bool = False
    conversation_id: Identifier | None = None
    """Keep this turn in the caller's conversation of this id (the client picks it), and read the question in
    the context of its earlier turns."""


class Passage(msgspec.Struct, frozen=True, omit_defaults=True):
    """A chunk of a document as retrieval found it: what the store returns, what the answerer reads, and what a
    citation shows. One type all the way, so a field added here reaches every layer."""

    document_id: str
    chunk_id: str
    title: str
    score: float
    """Cosine similarity from vector search, BM25 from full-text search; after fusion, 0..1 (1: best in both)."""
    text: str
    page: int | None = None
    """The PDF page the chunk is on (from 1); absent for formats without pages."""
    section: str | None = None
    """The headings above the chunk, outermost first (``"Install > Linux"``); absent where there are none."""
    created_at: str | None = None
    """When this version of the document was written (ISO 8601): the answerer prefers newer documents."""


class Usage(msgspec.Struct):
    input_tokens: int
    output_tokens: int


class ChatResponse(msgspec.Struct):
    answer: str
    citations: list[Passage]
    model: str
    usage: Usage
    trace_id: str
    cached: bool
    """Whether the answer came from the answer cache (no LLM call was made for this request)."""
    finish_reason: str = "stop"
    """``stop``, or ``length`` when the answer was cut at the requested token limit."""
    conversation_id: str | None = None
    """The conversation this turn was kept in, when the request named one."""


class ConversationTurn(msgspec.Struct):
    question: str
    answer: str
    citations: list[Passage]
    trace_id: str
    """The trace of the request that answered it."""
    created_at: str


class Conversation(msgspec.Struct):
    id: str
    turns: list[ConversationTurn]
    """Oldest first; the last ``RAGWATCH_CONVERSATION_MAX_TURNS``."""


class FeedbackCreate(msgspec.Struct, forbid_unknown_fields=True):
    trace_id: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}$", description="The answer's `trace_id`")]
    rating: Literal["up", "down"]
    comment: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    """Stored with the feedback; never a metric label, and logged only with ``RAGWATCH_CAPTURE_CONTENT``."""


class FeedbackAccepted(msgspec.Struct):
    trace_id: str
    kb_id: str
    rating: str
    created_at: str


class ProbeExpectation(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    document_id: Identifier | None = None
    """The document the answer must cite."""
    contains: Annotated[NonBlank, msgspec.Meta(max_length=500)] | None = None
    """Text the answer must contain (compared without regard to case)."""


class ProbeCreate(msgspec.Struct, forbid_unknown_fields=True):
    question: Annotated[NonBlank, msgspec.Meta(max_length=4000)]
    expect: ProbeExpectation
    """At least one of ``document_id`` and ``contains``."""


class ProbeResult(msgspec.Struct):
    result: Literal["pass", "fail", "error"]
    ran_at: str
    trace_id: str
    """The trace of the run: retrieval and answer, below a root span ``probe``."""
    duration_s: float
    detail: str = ""
    """Why it failed or erred."""


class Probe(msgspec.Struct):
    id: str
    kb_id: str
    question: str
    expect: ProbeExpectation
    created_at: str
    last: ProbeResult | None = None
    """The last run's result; ``null`` until the probe has run."""


class ProbeList(msgspec.Struct):
    data: list[Probe]
    """Oldest first; at most ``MAX_PROBES`` per knowledge base."""


class SearchRequest(msgspec.Struct, forbid_unknown_fields=True):
    query: Annotated[NonBlank, msgspec.Meta(max_length=4000)]
    top_k: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None
    """Passages to return, best first (1 to 100); default ``RAGWATCH_DEFAULT_TOP_K``."""


class SearchResults(msgspec.Struct):
    results: list[Passage]
    """Ordered by ``score``, best first."""


class HealthCheck(msgspec.Struct):
    status: str
    detail: str = ""


class Readiness(msgspec.Struct):
    status: str
    checks: dict[str, HealthCheck]


class Problem(msgspec.Struct):
    """An RFC 9457 problem, the body of every error response (``application/problem+json``).

    ``type`` is stable per kind of error and safe to branch on; validation errors add an ``errors`` list.
    """

    type: str
    title: str
    status: int
    detail: str
