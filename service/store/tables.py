"""The two tables' layouts, and the Arrow rows a document is written as.

A document has no row of its own: its title, metadata and size ride on each of its chunks (its full text on
chunk 0), so writing or replacing a document is one ``merge_insert`` commit. ``chunk_id`` is declared the
(unenforced) primary key, so that Lance detects two concurrent ``merge_insert``\\s adding the same new chunk
ids as a conflict and retries one, instead of duplicating rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec
import pyarrow as pa

from service.chunking import Block
from service.providers.base import Vectors
from service.store.records import DocumentRecord

__all__ = [
    "DOCUMENT_COLUMNS",
    "HIT_COLUMNS",
    "KB_SCHEMA",
    "LOCATION_FIELDS",
    "chunk_rows",
    "chunk_schema",
    "document_from_row",
]

_PRIMARY_KEY = b"lance-schema:unenforced-primary-key"

KB_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("tenant_id", pa.string()),
        ("name", pa.string()),
        ("description", pa.string()),
        ("embedding_model", pa.string()),
        ("created_at", pa.string()),
    ]
)
DOCUMENT_COLUMNS = ["document_id", "title", "chunk_count", "document_bytes", "metadata", "created_at"]
HIT_COLUMNS = ["document_id", "chunk_id", "title", "text", "page", "section", "created_at"]
LOCATION_FIELDS = [pa.field("page", pa.int32()), pa.field("section", pa.string())]
"""Columns added after the first release: a table created before them gets them (null) when opened."""


def chunk_schema(dimensions: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("chunk_id", pa.string(), nullable=False, metadata={_PRIMARY_KEY: b"true"}),
            ("tenant_id", pa.string()),
            ("kb_id", pa.string()),
            ("document_id", pa.string()),
            ("chunk_index", pa.int32()),
            ("chunk_count", pa.int32()),
            ("title", pa.string()),
            ("text", pa.string()),
            ("document_text", pa.string()),
            ("document_bytes", pa.int64()),
            ("metadata", pa.string()),
            ("created_at", pa.string()),
            ("vector", pa.list_(pa.float32(), dimensions)),
            *LOCATION_FIELDS,
        ]
    )


def chunk_rows(
    tenant_id: str,
    kb_id: str,
    document: DocumentRecord,
    chunks: Sequence[Block],
    vectors: Vectors,
    *,
    schema: pa.Schema,
) -> pa.Table:
    count = len(chunks)
    metadata = json.dumps(document.metadata, ensure_ascii=False)
    columns: dict[str, Any] = {
        "chunk_id": [f"{kb_id}:{document.document_id}:{index}" for index in range(count)],
        "tenant_id": [tenant_id] * count,
        "kb_id": [kb_id] * count,
        "document_id": [document.document_id] * count,
        "chunk_index": list(range(count)),
        "chunk_count": [count] * count,
        "title": [document.title] * count,
        "text": [chunk.text for chunk in chunks],
        "document_text": [document.text] + [None] * (count - 1),
        "document_bytes": [document.bytes] * count,
        "metadata": [metadata] * count,
        "created_at": [document.created_at] * count,
        "page": [chunk.page for chunk in chunks],
        "section": [chunk.section for chunk in chunks],
    }
    flat = pa.array(vectors.ravel(), type=pa.float32())
    columns["vector"] = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
    return pa.Table.from_pydict(columns, schema=schema)


def document_from_row(row: dict[str, Any]) -> DocumentRecord:
    """The document a chunk row describes (metadata is stored as JSON text)."""
    return msgspec.convert({**row, "metadata": json.loads(row["metadata"])}, DocumentRecord)
