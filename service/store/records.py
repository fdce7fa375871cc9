"""What the store keeps, as the rest of the service sees it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec

__all__ = ["DocumentRecord", "KnowledgeBaseRecord", "new_id", "now"]


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class KnowledgeBaseRecord(msgspec.Struct, frozen=True):
    id: str
    tenant_id: str
    name: str
    description: str
    embedding_model: str
    """The embedder the knowledge base was built with; chat and ingest refuse another (409)."""
    created_at: str


class DocumentRecord(msgspec.Struct, frozen=True, rename={"chunks": "chunk_count", "bytes": "document_bytes"}):
    """A document; renamed fields are read from the chunk columns that carry them (``chunk_count``…)."""

    document_id: str
    title: str
    chunks: int
    bytes: int
    metadata: dict[str, Any]
    created_at: str
    text: str | None = msgspec.field(default=None, name="document_text")
    """The full text, stored on the document's first chunk; ``None`` when not read."""
