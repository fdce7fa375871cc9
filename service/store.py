"""Knowledge bases, documents and chunks in LanceDB, always scoped to one tenant.

Layout: a ``knowledge_bases`` table and one ``chunks`` table. A document has no row of its own: its
title, metadata and size ride on each of its chunks (its full text on chunk 0), so writing or replacing a
document is one ``merge_insert`` commit. A search therefore sees either all of the old chunks or all of
the new ones, never a mix, and concurrent writers of the same document id cannot duplicate it.

Hybrid search reads its vector and full-text hits from one pinned table version (:meth:`Store.hybrid_search`):
two queries against the live table could straddle a write and fuse old chunks with new ones.

LanceDB filters are SQL text without parameter binding, so every value placed in one goes through
:func:`sql_literal`, which accepts only the strict id format of :data:`service.models.ID_PATTERN`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import lancedb
import msgspec
import pyarrow as pa

from service.models import ID_PATTERN
from service.providers.base import Vectors
from telemetry import Telemetry, db_query, disabled_telemetry

__all__ = [
    "ChunkHit",
    "DocumentRecord",
    "KnowledgeBaseRecord",
    "Store",
    "new_id",
    "now",
    "sql_literal",
]

logger = logging.getLogger("ragwatch.store")
_ID = re.compile(ID_PATTERN)
_WRITE_ATTEMPTS = 5
_PRIMARY_KEY = b"lance-schema:unenforced-primary-key"


def sql_literal(value: str) -> str:
    """``value`` quoted for a LanceDB filter; refuses anything outside the id format."""
    if not _ID.fullmatch(value):
        raise ValueError(f"not a valid id: {value!r}")
    return f"'{value}'"


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
    created_at: str


class DocumentRecord(msgspec.Struct, frozen=True):
    document_id: str
    title: str
    chunks: int
    bytes: int
    metadata: dict[str, Any]
    created_at: str
    text: str | None = None


class ChunkHit(msgspec.Struct, frozen=True):
    document_id: str
    chunk_id: str
    title: str
    text: str
    score: float
    """Cosine similarity for vector hits, BM25 for full-text hits."""


_KB_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("tenant_id", pa.string()),
        ("name", pa.string()),
        ("description", pa.string()),
        ("embedding_model", pa.string()),
        ("created_at", pa.string()),
    ]
)


def _chunk_schema(dimensions: int) -> pa.Schema:
    return pa.schema(
        [
            # Declared the (unenforced) primary key so that Lance detects two concurrent merge_inserts
            # adding the same new chunk ids as a conflict and retries one, instead of duplicating rows.
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
        ]
    )


_DOCUMENT_COLUMNS = ["document_id", "title", "chunk_count", "document_bytes", "metadata", "created_at"]
_HIT_COLUMNS = ["document_id", "chunk_id", "title", "text"]


class Store:
    """All LanceDB access. One instance per process, opened once and shared by every request."""

    def __init__(
        self, db: lancedb.AsyncConnection, kbs: Any, chunks: Any, ann_index_min_rows: int, telemetry: Telemetry
    ) -> None:
        self._telemetry = telemetry
        self._db = db
        self._kbs = kbs
        self._chunks = chunks
        self._ann_index_min_rows = ann_index_min_rows
        self._maintenance: asyncio.Task[None] | None = None
        self._last_maintenance = 0.0
        self._pinned: tuple[int, Any] | None = None

    @classmethod
    async def open(
        cls,
        uri: str,
        dimensions: int,
        read_consistency_s: float,
        ann_index_min_rows: int,
        *,
        telemetry: Telemetry | None = None,
    ) -> Store:
        """Open (creating if needed) the tables at ``uri``; ``telemetry`` defaults to none at all."""
        db = await lancedb.connect_async(uri, read_consistency_interval=timedelta(seconds=read_consistency_s))
        kbs = await db.create_table("knowledge_bases", schema=_KB_SCHEMA, exist_ok=True)
        chunks = await db.create_table("chunks", schema=_chunk_schema(dimensions), exist_ok=True)
        width = (await chunks.schema()).field("vector").type.list_size
        if width != dimensions:
            raise RuntimeError(
                f"RAGWATCH_EMBEDDING_DIMENSIONS: the chunks table at {uri!r} holds {width}-wide vectors, "
                f"not {dimensions}; use another RAGWATCH_DATA_DIR or the original width"
            )
        store = cls(db, kbs, chunks, ann_index_min_rows, telemetry or disabled_telemetry())
        await store._ensure_fts_index()
        return store

    async def close(self) -> None:
        if self._maintenance is not None:
            await self._maintenance
        self._db.close()  # type: ignore[no-untyped-call]

    async def ping(self) -> None:
        """Raise if either table cannot be read."""
        await self._kbs.count_rows()
        await self._chunks.count_rows()

    # --- knowledge bases ---------------------------------------------------------------------------------

    async def create_kb(self, tenant_id: str, name: str, description: str, embedding_model: str) -> KnowledgeBaseRecord:
        record = KnowledgeBaseRecord(
            id=new_id("kb"),
            tenant_id=tenant_id,
            name=name,
            description=description,
            embedding_model=embedding_model,
            created_at=now(),
        )
        await self._kbs.add([msgspec.structs.asdict(record)])
        return record

    async def list_kbs(self, tenant_id: str) -> list[KnowledgeBaseRecord]:
        rows = await self._kbs.query().where(f"tenant_id = {sql_literal(tenant_id)}").to_list()
        records = [msgspec.convert(row, KnowledgeBaseRecord) for row in rows]
        return sorted(records, key=lambda r: (r.created_at, r.id))

    async def get_kb(self, tenant_id: str, kb_id: str) -> KnowledgeBaseRecord | None:
        if not _ID.fullmatch(kb_id):
            return None
        with db_query(self._telemetry, "select", "knowledge_bases") as result:
            rows = await self._kbs.query().where(_kb_filter(tenant_id, kb_id, column="id")).limit(1).to_list()
            result.rows = len(rows)
        return msgspec.convert(rows[0], KnowledgeBaseRecord) if rows else None

    async def kb_counts(self, tenant_id: str, kb_id: str) -> tuple[int, int]:
        """(documents, chunks) in a knowledge base, both counted in the same table version."""
        scope = _kb_filter(tenant_id, kb_id)
        chunks_table = await self._snapshot()
        documents = await chunks_table.count_rows(f"{scope} AND chunk_index = 0")
        chunks = await chunks_table.count_rows(scope)
        return documents, chunks

    async def delete_kb(self, tenant_id: str, kb_id: str) -> None:
        """Delete the knowledge base first, so it is gone for every reader, then its chunks."""
        await self._kbs.delete(_kb_filter(tenant_id, kb_id, column="id"))
        await self._chunks.delete(_kb_filter(tenant_id, kb_id))

    # --- documents -----------------------------------------------------------------------------------------

    async def write_document(
        self,
        tenant_id: str,
        kb_id: str,
        document: DocumentRecord,
        chunk_texts: Sequence[str],
        vectors: Vectors,
    ) -> bool:
        """Insert or atomically replace a document's chunks; return whether it existed before."""
        scope = f"{_kb_filter(tenant_id, kb_id)} AND document_id = {sql_literal(document.document_id)}"
        existed: bool = await self._chunks.count_rows(scope) > 0
        rows = _chunk_rows(tenant_id, kb_id, document, chunk_texts, vectors, schema=await self._chunks.schema())
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                with db_query(self._telemetry, "merge_insert", "chunks") as result:
                    await (
                        self._chunks.merge_insert("chunk_id")
                        .when_matched_update_all()
                        .when_not_matched_insert_all()
                        .when_not_matched_by_source_delete(scope)
                        .execute(rows)
                    )
                    result.rows = rows.num_rows
                break
            except RuntimeError as exc:  # lance reports commit conflicts as RuntimeError
                if attempt == _WRITE_ATTEMPTS or "conflict" not in str(exc).lower():
                    raise
                await asyncio.sleep(0.05 * attempt)
        self._schedule_maintenance()
        return existed

    async def list_documents(self, tenant_id: str, kb_id: str) -> list[DocumentRecord]:
        rows = await (
            self._chunks.query()
            .where(f"{_kb_filter(tenant_id, kb_id)} AND chunk_index = 0")
            .select(_DOCUMENT_COLUMNS)
            .to_list()
        )
        return sorted((_document(row) for row in rows), key=lambda d: (d.created_at, d.document_id))

    async def get_document(self, tenant_id: str, kb_id: str, document_id: str) -> DocumentRecord | None:
        if not _ID.fullmatch(document_id):
            return None
        rows = await (
            self._chunks.query()
            .where(f"{_kb_filter(tenant_id, kb_id)} AND document_id = {sql_literal(document_id)} AND chunk_index = 0")
            .select([*_DOCUMENT_COLUMNS, "document_text"])
            .limit(1)
            .to_list()
        )
        return _document(rows[0]) if rows else None

    async def delete_document(self, tenant_id: str, kb_id: str, document_id: str) -> bool:
        """Delete a document's chunks; ``False`` when there is no such document (or the id is not an id)."""
        if not _ID.fullmatch(document_id):
            return False
        scope = f"{_kb_filter(tenant_id, kb_id)} AND document_id = {sql_literal(document_id)}"
        if await self._chunks.count_rows(scope) == 0:
            return False
        await self._chunks.delete(scope)
        return True

    # --- search ----------------------------------------------------------------------------------------------

    async def hybrid_search(
        self, tenant_id: str, kb_id: str, vector: Vectors, query: str, k: int
    ) -> tuple[list[ChunkHit], list[ChunkHit]]:
        """(vector hits, full-text hits), both read from the same table version.

        A document replaced while this runs is seen wholly old or wholly new by *both* lists, so fusing
        them can never cite old and new chunks of one document side by side.
        """
        chunks_table = await self._snapshot()
        vector_hits, text_hits = await asyncio.gather(
            self._query("vector_search", _vector_search(chunks_table, tenant_id, kb_id, vector, k), k),
            self._query("full_text_search", _text_search(chunks_table, tenant_id, kb_id, query, k), k),
        )
        return vector_hits, text_hits

    async def _query(self, operation: str, query: Awaitable[list[ChunkHit]], k: int) -> list[ChunkHit]:
        """Run ``query`` inside its database span, so the span times the query's execution."""
        with db_query(self._telemetry, operation, "chunks", top_k=k) as result:
            hits = await query
            result.rows = len(hits)
        return hits

    async def _snapshot(self) -> Any:
        """A read-only handle on the chunks table pinned to its current version (reused until the next write)."""
        version: int = await self._chunks.version()
        pinned = self._pinned
        if pinned is None or pinned[0] != version:
            pinned = (version, await self._db.open_table("chunks", version=version))
            self._pinned = pinned
        return pinned[1]

    # --- maintenance ----------------------------------------------------------------------------------------

    async def _ensure_fts_index(self) -> None:
        """Create the full-text index once; processes starting together may race, and one creation wins."""
        for attempt in range(_WRITE_ATTEMPTS):
            if await self._has_index("text"):
                return
            try:
                await self._chunks.create_index("text", config=lancedb.index.FTS(), replace=False)
                return
            except (RuntimeError, ValueError):
                await asyncio.sleep(0.05 * (attempt + 1))  # another process created it, or a commit conflicted
        if not await self._has_index("text"):
            raise RuntimeError("the full-text index on chunks.text could not be created")

    async def _has_index(self, column: str) -> bool:
        return any(index.columns == [column] for index in await self._chunks.list_indices())

    def _schedule_maintenance(self) -> None:
        """Fold new rows into the indexes in the background, at most once a minute per process."""
        if self._maintenance is not None and not self._maintenance.done():
            return
        if time.monotonic() - self._last_maintenance < 60:
            return
        self._last_maintenance = time.monotonic()
        self._maintenance = asyncio.create_task(self._maintain())

    async def _maintain(self) -> None:
        try:
            rows = await self._chunks.count_rows()
            if rows >= self._ann_index_min_rows and not await self._has_index("vector"):
                await self._chunks.create_index(
                    "vector", config=lancedb.index.HnswSq(distance_type="cosine"), replace=False
                )
            await self._chunks.optimize()
        except Exception:  # maintenance is best effort: the next write schedules it again
            logger.warning("LanceDB index maintenance failed", exc_info=True)


async def _vector_search(table: Any, tenant_id: str, kb_id: str, vector: Vectors, k: int) -> list[ChunkHit]:
    rows = await (
        table.query()
        .nearest_to(vector)
        .distance_type("cosine")
        .where(_kb_filter(tenant_id, kb_id))
        .select([*_HIT_COLUMNS, "_distance"])
        .limit(k)
        .to_list()
    )
    return [_hit(row, 1.0 - float(row["_distance"])) for row in rows]


async def _text_search(table: Any, tenant_id: str, kb_id: str, query: str, k: int) -> list[ChunkHit]:
    rows = await (
        table.query()
        .nearest_to_text(query, columns="text")
        .where(_kb_filter(tenant_id, kb_id))
        .select([*_HIT_COLUMNS, "_score"])
        .limit(k)
        .to_list()
    )
    return [_hit(row, float(row["_score"])) for row in rows]


def _kb_filter(tenant_id: str, kb_id: str, column: str = "kb_id") -> str:
    return f"tenant_id = {sql_literal(tenant_id)} AND {column} = {sql_literal(kb_id)}"


def _chunk_rows(
    tenant_id: str,
    kb_id: str,
    document: DocumentRecord,
    chunk_texts: Sequence[str],
    vectors: Vectors,
    *,
    schema: pa.Schema,
) -> pa.Table:
    count = len(chunk_texts)
    metadata = json.dumps(document.metadata, ensure_ascii=False)
    columns: dict[str, Any] = {
        "chunk_id": [f"{kb_id}:{document.document_id}:{index}" for index in range(count)],
        "tenant_id": [tenant_id] * count,
        "kb_id": [kb_id] * count,
        "document_id": [document.document_id] * count,
        "chunk_index": list(range(count)),
        "chunk_count": [count] * count,
        "title": [document.title] * count,
        "text": list(chunk_texts),
        "document_text": [document.text] + [None] * (count - 1),
        "document_bytes": [document.bytes] * count,
        "metadata": [metadata] * count,
        "created_at": [document.created_at] * count,
    }
    flat = pa.array(vectors.ravel(), type=pa.float32())
    columns["vector"] = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
    return pa.Table.from_pydict(columns, schema=schema)


def _document(row: dict[str, Any]) -> DocumentRecord:
    return DocumentRecord(
        document_id=row["document_id"],
        title=row["title"],
        chunks=row["chunk_count"],
        bytes=row["document_bytes"],
        metadata=json.loads(row["metadata"]),
        created_at=row["created_at"],
        text=row.get("document_text"),
    )


def _hit(row: dict[str, Any], score: float) -> ChunkHit:
    return ChunkHit(
        document_id=row["document_id"],
        chunk_id=row["chunk_id"],
        title=row["title"],
        text=row["text"],
        score=score,
    )
