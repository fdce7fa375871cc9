"""Knowledge bases, documents and chunks in LanceDB, always scoped to one tenant.

Layout: a ``knowledge_bases`` table and one ``chunks`` table (see :mod:`service.store.tables`). A search sees
either all of a document's old chunks or all of its new ones, never a mix, and concurrent writers of the same
document id cannot duplicate it. Hybrid search reads its vector and full-text hits from one pinned table
version (:meth:`Store.hybrid_search`): two queries against the live table could straddle a write and fuse old
chunks with new ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

import lancedb
import msgspec
import numpy as np
import pyarrow as pa

from service.chunking import Block
from service.models import Passage
from service.providers.base import Vectors
from service.store.filters import document_filter, is_id, kb_filter, sql_literal
from service.store.maintenance import IndexMaintenance
from service.store.records import DocumentRecord, KnowledgeBaseRecord, new_id, now
from service.store.search import text_search, vector_search
from service.store.tables import (
    DOCUMENT_COLUMNS,
    KB_SCHEMA,
    LOCATION_FIELDS,
    chunk_rows,
    chunk_schema,
    document_from_row,
)
from service.store.writes import DocumentWrite, GroupCommit, commit_documents, retried, update_rows
from telemetry import Telemetry, db_query, disabled_telemetry

__all__ = ["Store"]


KB_SCOPED_TABLES = ("probes", "feedback")
"""Tables of other services whose rows belong to one knowledge base: deleted with it (:meth:`Store.delete_kb`)."""
REEMBED_BATCH = 1024
"""Chunks re-embedded and written per commit by :meth:`Store.reembed`."""


@dataclass(frozen=True)
class _Tables:
    """What :meth:`Store.open` connects: the database, its two tables and their index upkeep."""

    db: Any
    kbs: Any
    chunks: Any
    schema: pa.Schema
    maintenance: IndexMaintenance
    writer: GroupCommit


class Store:
    """All LanceDB access. One instance per process, shared by every request; :meth:`open` connects it."""

    def __init__(
        self,
        uri: str,
        *,
        dimensions: int,
        read_consistency_s: float,
        ann_index_min_rows: int,
        cleanup_interval_s: float = 1800.0,
        telemetry: Telemetry | None = None,
    ) -> None:
        """Nothing is opened yet; ``telemetry`` defaults to none at all. ``cleanup_interval_s``: see
        :mod:`service.store.maintenance` (``RAGWATCH_CLEANUP_INTERVAL_S``)."""
        self._uri = uri
        self._dimensions = dimensions
        self._read_consistency_s = read_consistency_s
        self._ann_index_min_rows = ann_index_min_rows
        self._cleanup_interval_s = cleanup_interval_s
        self._telemetry = telemetry or disabled_telemetry()
        self._tables: _Tables | None = None
        self._pinned: tuple[int, Any] | None = None
        self._padding = 0

    async def open(self) -> Store:
        """Connect and open (creating if needed) the tables; the vectors may not be wider than the table's."""
        consistency = timedelta(seconds=self._read_consistency_s)
        db = await lancedb.connect_async(self._uri, read_consistency_interval=consistency)
        kbs = await db.create_table("knowledge_bases", schema=KB_SCHEMA, exist_ok=True)
        # An existing table is opened as it is, so that a width that differs is reported below by name.
        try:
            chunks = await db.open_table("chunks")
        except ValueError:  # not there yet; created here (or by another process starting at the same time)
            chunks = await db.create_table("chunks", schema=chunk_schema(self._dimensions), exist_ok=True)
        schema = await chunks.schema()
        width = schema.field("vector").type.list_size
        if width < self._dimensions:
            db.close()  # type: ignore[no-untyped-call]
            raise RuntimeError(
                f"RAGWATCH_EMBEDDING_DIMENSIONS: the chunks table at {self._uri!r} holds {width}-wide vectors, "
                f"narrower than {self._dimensions}; use another RAGWATCH_DATA_DIR or at most {width} dimensions"
            )
        # Narrower vectors are stored zero-padded to the table's width: cosine similarity is unchanged, so a
        # store created for one embedder keeps serving after a switch to a narrower one (and its re-index).
        self._padding = width - self._dimensions
        maintenance = IndexMaintenance(
            chunks, self._ann_index_min_rows, cleanup_s=self._cleanup_interval_s, knowledge_bases=kbs
        )
        await maintenance.add_missing_columns(LOCATION_FIELDS)
        await maintenance.ensure_indexes()
        self._tables = _Tables(db, kbs, chunks, await chunks.schema(), maintenance, GroupCommit(self._commit))
        maintenance.start_soon()
        return self

    async def close(self) -> None:
        if self._tables is not None:
            await self._tables.writer.wait()
            await self._tables.maintenance.wait()
            self._tables.db.close()

    @property
    def _opened(self) -> _Tables:
        if self._tables is None:
            raise RuntimeError("the store is not open: await Store.open() first")
        return self._tables

    @property
    def _db(self) -> Any:
        return self._opened.db

    @property
    def _kbs(self) -> Any:
        return self._opened.kbs

    @property
    def _chunks(self) -> Any:
        return self._opened.chunks

    async def table(self, name: str, schema: Any) -> Any:
        """The table ``name`` of the same database, created with ``schema`` if it is not there (the small
        tables of other services: feedback, probes), kept by the background upkeep like the others; those of
        :data:`KB_SCOPED_TABLES` have ``tenant_id`` and ``kb_id`` columns and go with their knowledge base."""
        table = await self._db.create_table(name, schema=schema, exist_ok=True)
        self._opened.maintenance.keep(table)
        return table

    async def maintain(self) -> None:
        """Run the background index maintenance now (an ANN index past the threshold, then ``optimize``)."""
        await self._opened.maintenance.run()

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

    async def list_kbs(
        self, tenant_id: str, *, after: str | None = None, limit: int | None = None
    ) -> list[KnowledgeBaseRecord]:
        """The tenant's knowledge bases by creation time, then id; those matching ``after`` (a filter of
        :mod:`service.pagination`), at most ``limit``."""
        scope = f"tenant_id = {sql_literal(tenant_id)}" + (f" AND {after}" if after else "")
        rows = await self._kbs.query().where(scope).to_list()
        records = sorted(
            (msgspec.convert(row, KnowledgeBaseRecord) for row in rows), key=lambda r: (r.created_at, r.id)
        )
        return records[:limit]

    async def get_kb(self, tenant_id: str, kb_id: str) -> KnowledgeBaseRecord | None:
        if not is_id(kb_id):
            return None
        with db_query(self._telemetry, "select", "knowledge_bases") as result:
            rows = await self._kbs.query().where(kb_filter(tenant_id, kb_id, column="id")).limit(1).to_list()
            result.rows = len(rows)
        return msgspec.convert(rows[0], KnowledgeBaseRecord) if rows else None

    async def kb_counts(self, tenant_id: str, kb_id: str) -> tuple[int, int]:
        """(documents, chunks) in a knowledge base, both counted in the same table version."""
        scope = kb_filter(tenant_id, kb_id)
        chunks_table = await self._snapshot()
        documents = await chunks_table.count_rows(f"{scope} AND chunk_index = 0")
        chunks = await chunks_table.count_rows(scope)
        return documents, chunks

    async def delete_kb(self, tenant_id: str, kb_id: str) -> None:
        """Delete the knowledge base first, so it is gone for every reader, then its chunks (chunks a crash left
        in between are deleted by the next process's upkeep), then its rows in the tables of other services
        (its probes, the feedback on its answers)."""
        scope = kb_filter(tenant_id, kb_id)
        await self._kbs.delete(kb_filter(tenant_id, kb_id, column="id"))
        await self._chunks.delete(scope)
        for name in KB_SCOPED_TABLES:
            try:
                table = await self._db.open_table(name)
            except ValueError:  # not created yet: no probe or feedback was ever stored
                continue
            await retried(partial(table.delete, scope))
        self._opened.maintenance.schedule(deleted=True)  # erased from disk within the clean-up interval

    async def reembed(
        self, tenant_id: str, kb_id: str, embed: Callable[[list[Block], list[str]], Awaitable[Vectors]], model: str
    ) -> int:
        """Give every chunk of a knowledge base the vector ``embed`` makes of it (its text, page and section, and
        its document's title), then record ``model`` as the knowledge base's embedder; the number of chunks.

        In batches of :data:`REEMBED_BATCH` chunks, one commit each. Interrupted, the knowledge base still names
        its old embedder (so it keeps answering 409) and running this again finishes the work.
        """
        chunks = await self._chunks.query().where(kb_filter(tenant_id, kb_id)).to_arrow()
        vector_type = chunks.schema.field("vector").type
        for start in range(0, chunks.num_rows, REEMBED_BATCH):
            batch = chunks.slice(start, REEMBED_BATCH)
            rows = batch.select(["text", "page", "section", "title"]).to_pylist()
            blocks = [Block(row["text"], row["page"], row["section"]) for row in rows]
            vectors = self._padded(await embed(blocks, [row["title"] for row in rows]))
            column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), type=pa.float32()), type=vector_type)
            batch = batch.set_column(batch.schema.get_field_index("vector"), "vector", column)
            await update_rows(self._chunks, batch, self._telemetry)
        self._opened.maintenance.schedule()  # every row was rewritten: fold them into the indexes again
        scope = kb_filter(tenant_id, kb_id, column="id")
        await retried(lambda: self._kbs.update({"embedding_model": model}, where=scope))
        return int(chunks.num_rows)

    # --- documents -----------------------------------------------------------------------------------------

    async def write_document(
        self,
        tenant_id: str,
        kb_id: str,
        document: DocumentRecord,
        chunks: Sequence[Block],
        vectors: Vectors,
    ) -> bool:
        """Insert or atomically replace a document's chunks; return whether it existed before.

        Returns once the commit holding the document has returned; concurrent writes share commits.
        """
        rows = chunk_rows(tenant_id, kb_id, document, chunks, self._padded(vectors), schema=self._opened.schema)
        return await self._opened.writer.write(DocumentWrite(tenant_id, kb_id, document.document_id, rows))

    def _padded(self, vectors: Vectors) -> Vectors:
        """``vectors`` (one or a matrix of rows) widened with zeros to the table's width."""
        if not self._padding:
            return vectors
        widths = [(0, 0)] * (vectors.ndim - 1) + [(0, self._padding)]
        padded: Vectors = np.pad(vectors, widths)
        return padded

    async def _commit(self, writes: list[DocumentWrite]) -> list[bool]:
        replaced = await commit_documents(self._chunks, writes, self._telemetry)
        self._opened.maintenance.schedule(deleted=any(replaced))  # a replaced document's old chunks are erased
        return replaced

    async def list_documents(
        self, tenant_id: str, kb_id: str, *, after: str | None = None, limit: int | None = None
    ) -> list[DocumentRecord]:
        """A knowledge base's documents by creation time, then id; those matching ``after``, at most ``limit``."""
        scope = f"{kb_filter(tenant_id, kb_id)} AND chunk_index = 0" + (f" AND {after}" if after else "")
        rows = await self._chunks.query().where(scope).select(DOCUMENT_COLUMNS).to_list()
        documents = sorted((document_from_row(row) for row in rows), key=lambda d: (d.created_at, d.document_id))
        return documents[:limit]

    async def get_document(self, tenant_id: str, kb_id: str, document_id: str) -> DocumentRecord | None:
        if not is_id(document_id):
            return None
        rows = await (
            self._chunks.query()
            .where(f"{document_filter(tenant_id, kb_id, document_id)} AND chunk_index = 0")
            .select([*DOCUMENT_COLUMNS, "document_text"])
            .limit(1)
            .to_list()
        )
        return document_from_row(rows[0]) if rows else None

    async def delete_document(self, tenant_id: str, kb_id: str, document_id: str) -> bool:
        """Delete a document's chunks; ``False`` when there is no such document (or the id is not an id)."""
        if not is_id(document_id):
            return False
        scope = document_filter(tenant_id, kb_id, document_id)
        if await self._chunks.count_rows(scope) == 0:
            return False
        await self._chunks.delete(scope)
        self._opened.maintenance.schedule(deleted=True)
        return True

    # --- search ----------------------------------------------------------------------------------------------

    async def hybrid_search(
        self, tenant_id: str, kb_id: str, vector: Vectors, query: str, k: int
    ) -> tuple[list[Passage], list[Passage]]:
        """(vector hits, full-text hits), both read from the same table version.

        A document replaced while this runs is seen wholly old or wholly new by *both* lists, so fusing
        them can never cite old and new chunks of one document side by side.
        """
        chunks_table = await self._snapshot()
        vector = self._padded(vector)
        vector_hits, text_hits = await asyncio.gather(
            self._query("vector_search", vector_search(chunks_table, tenant_id, kb_id, vector, k), k),
            self._query("full_text_search", text_search(chunks_table, tenant_id, kb_id, query, k), k),
        )
        return vector_hits, text_hits

    async def _query(self, operation: str, query: Awaitable[list[Passage]], k: int) -> list[Passage]:
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
