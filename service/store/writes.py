"""Writing documents: many at once in one commit, each one whole or not at all.

A document's chunks are always written in a single commit, so a search sees all of a document's old chunks
or all of its new ones. Concurrent uploads share commits (:class:`GroupCommit`): while one commit runs, the
documents that arrive queue up, and the next commit takes them all; each upload is acknowledged only once the
commit holding it has returned, so an acknowledged document survives a crash.

A commit writes new documents with an insert-only ``merge_insert`` keyed on ``chunk_id``, which touches no
existing row and costs little however large the table grows, and replaces existing documents with one
``merge_insert`` that also deletes their chunks the new version no longer has. ``chunk_id`` is the table's
(unenforced) primary key: two writers inserting the same new document at once conflict, one retries, and its
rows then match instead of duplicating; a document inserted by someone else meanwhile is replaced instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from service.store.filters import document_filter, kb_filter, sql_literal
from telemetry import Telemetry, db_query

__all__ = ["DocumentWrite", "GroupCommit", "commit_documents", "is_write_contention", "retried", "update_rows"]

WRITE_ATTEMPTS = 5


@dataclass(frozen=True)
class DocumentWrite:
    tenant_id: str
    kb_id: str
    document_id: str
    rows: pa.Table
    """Every chunk of the document, as rows of the chunks table (built by the writer's request)."""

    @property
    def scope(self) -> str:
        return document_filter(self.tenant_id, self.kb_id, self.document_id)


async def commit_documents(table: Any, writes: Sequence[DocumentWrite], telemetry: Telemetry) -> list[bool]:
    """Write ``writes`` (distinct documents) in at most two commits; for each, whether it replaced one."""
    existing = await _existing(table, writes)
    new = [write for write in writes if write.scope not in existing]
    if new:
        inserted = await _insert(table, new, telemetry)
        if inserted < sum(write.rows.num_rows for write in new):
            # Another writer inserted some of these documents meanwhile: they are replacements now.
            existing |= await _existing(table, new)
    replaced = [write for write in writes if write.scope in existing]
    if replaced:
        await _replace(table, replaced, telemetry)
    return [write.scope in existing for write in writes]


async def _existing(table: Any, writes: Sequence[DocumentWrite]) -> set[str]:
    """The scopes of the documents among ``writes`` that have chunks already (one indexed query)."""
    by_kb: dict[tuple[str, str], list[str]] = {}
    for write in writes:
        by_kb.setdefault((write.tenant_id, write.kb_id), []).append(write.document_id)
    condition = " OR ".join(
        f"({kb_filter(tenant, kb)} AND document_id IN ({', '.join(sql_literal(d) for d in ids)}))"
        for (tenant, kb), ids in by_kb.items()
    )
    rows = await (
        table.query()
        .where(f"({condition}) AND chunk_index = 0")
        .select(["tenant_id", "kb_id", "document_id"])
        .to_list()
    )
    return {document_filter(row["tenant_id"], row["kb_id"], row["document_id"]) for row in rows}


async def _insert(table: Any, writes: Sequence[DocumentWrite], telemetry: Telemetry) -> int:
    rows = pa.concat_tables([write.rows for write in writes])
    result = await _committed(
        telemetry, rows.num_rows, lambda: table.merge_insert("chunk_id").when_not_matched_insert_all().execute(rows)
    )
    inserted: int = result.num_inserted_rows
    return inserted


async def _replace(table: Any, writes: Sequence[DocumentWrite], telemetry: Telemetry) -> None:
    rows = pa.concat_tables([write.rows for write in writes])
    scope = " OR ".join(f"({write.scope})" for write in writes)
    await _committed(
        telemetry,
        rows.num_rows,
        lambda: (
            table.merge_insert("chunk_id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .when_not_matched_by_source_delete(scope)
            .execute(rows)
        ),
    )


async def update_rows(table: Any, rows: pa.Table, telemetry: Telemetry) -> None:
    """Replace the rows of ``rows``' chunk ids with ``rows`` in one commit (retried when another writer won)."""
    await _committed(
        telemetry, rows.num_rows, lambda: table.merge_insert("chunk_id").when_matched_update_all().execute(rows)
    )


async def _committed(telemetry: Telemetry, rows: int, commit: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``commit`` in its ``merge_insert chunks`` span, retrying commit conflicts with other writers."""

    async def spanned() -> Any:
        with db_query(telemetry, "merge_insert", "chunks") as result:
            outcome = await commit()
            result.rows = rows
        return outcome

    return await retried(spanned)


async def retried(commit: Callable[[], Awaitable[Any]]) -> Any:
    """``commit``'s outcome, tried again (up to :data:`WRITE_ATTEMPTS` in all) while another writer wins."""
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            return await commit()
        except (RuntimeError, OSError) as exc:  # lance's commit conflicts, by whichever class its version uses
            if attempt == WRITE_ATTEMPTS or not is_write_contention(exc):
                raise
            await asyncio.sleep(0.05 * attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


_CONTENTION = ("conflict", "contention", "preempted", "concurrent", "retries")


def is_write_contention(error: Exception) -> bool:
    """Whether ``error`` is another writer's commit winning over ours (retry), not a fault of the write: Lance
    words it "commit conflict", "preempted by concurrent transaction", "too much write contention" or "failed
    to commit after N retries" depending on its version and on which of its own retries ran out."""
    message = str(error).lower()
    return any(word in message for word in _CONTENTION)


class GroupCommit:
    """Concurrent writes share commits: while one commit runs, arriving writes queue, and the next takes them.

    Under no load a write is committed at once; under concurrent load, commits grow with it, and each waits a
    few milliseconds for the writers of the previous one to send their next document. A batch never holds the
    same document twice (a second write of one queues for the commit after). A failed
    commit fails every write in it; each caller's own rows were built and checked before they queued.
    """

    def __init__(
        self,
        commit: Callable[[list[DocumentWrite]], Awaitable[list[bool]]],
        max_batch: int = 256,
        window_s: float = 0.005,
    ) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._window_s = window_s
        self._queue: list[tuple[DocumentWrite, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._company = False
        """Whether the last commit held several writes: then the next waits ``window_s`` for more to join it."""

    async def write(self, write: DocumentWrite) -> bool:
        """Whether ``write`` replaced a document, once the commit holding it has returned."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((write, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._queue:
            if self._company and len(self._queue) < self._max_batch:
                # Writers that wrote together write again together: clients acknowledged by the last commit
                # send their next document a few milliseconds later, in time for this one.
                await asyncio.sleep(self._window_s)
            batch: list[tuple[DocumentWrite, asyncio.Future[bool]]] = []
            seen: set[str] = set()
            for item in list(self._queue):
                if len(batch) == self._max_batch:
                    break
                if item[0].scope not in seen:
                    seen.add(item[0].scope)
                    batch.append(item)
                    self._queue.remove(item)
            self._company = len(batch) > 1
            try:
                results = await self._commit([write for write, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for (_, future), replaced in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(replaced)

    async def wait(self) -> None:
        """Let the commits under way finish (at shutdown)."""
        if self._flusher is not None:
            await self._flusher
