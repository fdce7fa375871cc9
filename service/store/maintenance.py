"""Upkeep of the tables: the chunks table's columns and indexes, compaction in the background, and the erasure
of deleted data.

Indexes: full text on ``text``; a B-tree on ``document_id`` (what every write and document read looks up); an
ANN vector index once the table is large enough to gain from one. Never one on ``chunk_id``, the key writes
join on: with it, LanceDB's ``merge_insert`` takes a path that no longer detects two writers inserting the same
new key at once (measured with two processes: the document was duplicated), and that detection is what keeps
concurrent writers of one document from duplicating it. New
rows are searchable at once (unindexed rows are scanned, which grows slower as they pile up) and folded into the
indexes by :meth:`run`, which also compacts the small fragments that each commit leaves. Runs happen in the
background, one at a time: once writes have paused for :data:`QUIET_S` (so a burst of uploads is compacted as
soon as it ends), and during sustained writes after :data:`COMMITS_PER_RUN` commits or a minute, whichever
comes first. A run costs more as the table grows (the full-text index is rebuilt over every row: 12 s of a core
at 50,000 chunks here), so after each run the next waits at least :data:`DUTY_FACTOR` times as long as it
took: maintenance never takes more than a tenth of the machine from the requests it slows down.

Erasure (see :mod:`service.store.erasure`). Each run removes the versions of every table older than the
clean-up interval (``RAGWATCH_CLEANUP_INTERVAL_S``), and once rows were deleted (a document or knowledge base
deleted, a document replaced) a run rewrites the tables that still hold deleted rows, at most once per interval:
the chunks table is then indexed again from scratch, the cost the interval bounds. A run is also due an interval
after the last change, so that the versions still made of the old files go even when nothing else is written:
deleted text leaves the directory within two intervals, usually within one and a few seconds. A process's first
run erases too (a crash may have come between a delete and its erasure) and deletes the chunks of knowledge bases
that are no longer there, so a crash delays erasure by no more than the restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from functools import partial
from typing import Any

import lancedb
import pyarrow as pa

from service.store.erasure import delete_orphans, rewrite_deleted_rows
from service.store.writes import retried

__all__ = ["COMMITS_PER_RUN", "DUTY_FACTOR", "QUIET_S", "IndexMaintenance"]

logger = logging.getLogger("ragwatch.store")
_ATTEMPTS = 5
_INTERVAL_S = 60.0
QUIET_S = 2.0
COMMITS_PER_RUN = 200
DUTY_FACTOR = 9.0
"""Commits after which a maintenance run starts without waiting for the minute: a burst of uploads leaves
that many small fragments, and compacting them keeps every read as fast as before the burst."""
_SCALAR_INDEXES = ("document_id",)
_CLEANUP_MARGIN_S = 1.0
"""How long past the interval the clean-up run starts: versions exactly as old as the interval stay."""


class IndexMaintenance:
    def __init__(self, chunks: Any, ann_index_min_rows: int, *, cleanup_s: float, knowledge_bases: Any) -> None:
        self._chunks = chunks
        self._knowledge_bases = knowledge_bases
        self._tables: list[Any] = [chunks, knowledge_bases]
        self._ann_index_min_rows = ann_index_min_rows
        self._cleanup_after = timedelta(seconds=cleanup_s)
        self._cleanup_delay_s = cleanup_s + _CLEANUP_MARGIN_S
        self._changed_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._last = 0.0  # the first commit of a process starts a run
        self._next_allowed = 0.0
        self._commits = 0
        self._quiet: asyncio.TimerHandle | None = None
        self._cleanup: asyncio.TimerHandle | None = None
        self._cleanup_due = False
        self._erase = True  # the first run looks for deleted rows: a crash may have left some
        self._next_erase = 0.0

    def keep(self, table: Any) -> None:
        """Also erase ``table``'s deleted rows and remove its old versions (another service's small table)."""
        if all(kept.name != table.name for kept in self._tables):
            self._tables.append(table)

    def start_soon(self) -> None:
        """Run once writes could have paused (at start: a crash may have left deleted rows, or rows unindexed)."""
        self._arm(QUIET_S)

    async def add_missing_columns(self, fields: Sequence[pa.Field]) -> None:
        """Add ``fields`` (as nulls) to a table created before they existed; racing processes add them once."""
        for attempt in range(_ATTEMPTS):
            names = set((await self._chunks.schema()).names)
            missing = [field for field in fields if field.name not in names]
            if not missing:
                return
            try:
                await self._chunks.add_columns(missing)
            except (RuntimeError, ValueError):
                await asyncio.sleep(0.05 * (attempt + 1))  # another process added them, or a commit conflicted
        raise RuntimeError(f"could not add the columns {[field.name for field in fields]} to the chunks table")

    async def ensure_indexes(self) -> None:
        """Create the full-text and key indexes once; processes starting together may race, and one wins."""
        await self._ensure("text", lancedb.index.FTS())
        for column in _SCALAR_INDEXES:
            await self._ensure(column, lancedb.index.BTree())

    async def _ensure(self, column: str, config: Any) -> None:
        for attempt in range(_ATTEMPTS):
            if await self._has_index(column):
                return
            try:
                await self._chunks.create_index(column, config=config, replace=False)
                return
            except (RuntimeError, ValueError):
                await asyncio.sleep(0.05 * (attempt + 1))  # another process created it, or a commit conflicted
        if not await self._has_index(column):
            raise RuntimeError(f"the index on chunks.{column} could not be created")

    def schedule(self, *, deleted: bool = False) -> None:
        """Count a commit (``deleted``: one that deleted rows), and start a run in the background when one is
        due (see the module's docstring)."""
        self._commits += 1
        self._erase = self._erase or deleted
        self._changed()
        self._arm(QUIET_S)
        if self._commits >= COMMITS_PER_RUN or time.monotonic() - self._last >= _INTERVAL_S:
            self._start()

    def _changed(self) -> None:
        """A table changed: versions to remove once they are an interval old, so a clean-up run is due then."""
        self._changed_at = time.monotonic()
        if self._cleanup is None:
            self._cleanup = asyncio.get_running_loop().call_later(self._cleanup_delay_s, self._clean_up)

    def _clean_up(self) -> None:
        self._cleanup = None
        self._cleanup_due = True
        self._start()
        remaining_s = self._changed_at + self._cleanup_delay_s - time.monotonic()
        if remaining_s > 0:  # what changed since the timer was set is not old enough yet: another run then
            self._cleanup = asyncio.get_running_loop().call_later(remaining_s, self._clean_up)

    def _arm(self, delay_s: float) -> None:
        if self._quiet is not None:
            self._quiet.cancel()
        self._quiet = asyncio.get_running_loop().call_later(delay_s, self._start)

    def _erase_due(self) -> bool:
        return self._erase and time.monotonic() >= self._next_erase

    def _start(self) -> None:
        if not (self._commits or self._cleanup_due or self._erase_due()):
            return
        if self._task is not None and not self._task.done():
            return
        wait_s = self._next_allowed - time.monotonic()
        if wait_s > 0:  # the last run was recent for what it cost: try again once the duty cycle allows
            self._arm(max(wait_s, QUIET_S))
            return
        self._last = time.monotonic()
        self._commits = 0
        self._cleanup_due = False
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def wait(self) -> None:
        """Let a maintenance run in progress finish, and start no other (at shutdown)."""
        for timer in (self._quiet, self._cleanup):
            if timer is not None:
                timer.cancel()
        if self._task is not None:
            await self._task

    async def _has_index(self, column: str) -> bool:
        return any(index.columns == [column] for index in await self._chunks.list_indices())

    async def run(self) -> None:
        """One maintenance step: an ANN index once the table reaches the threshold, ``optimize`` of every table
        (which also removes the versions older than the clean-up interval), then deleted rows erased when due."""
        started = time.monotonic()
        versions = await self._versions()
        try:
            rows = await self._chunks.count_rows()
            if rows >= self._ann_index_min_rows and not await self._has_index("vector"):
                await self._chunks.create_index(
                    "vector", config=lancedb.index.HnswSq(distance_type="cosine"), replace=False
                )
            stats = await self._optimize(rows)
            if self._erase_due():
                self._erase = False  # deletes from now on call for another erasure
                try:
                    await delete_orphans(self._chunks, self._knowledge_bases)
                    if await rewrite_deleted_rows(self._tables):
                        # What costs (indexing every row again) happens at most once per interval.
                        self._next_erase = time.monotonic() + self._cleanup_after.total_seconds()
                        stats = await self._optimize(rows)
                except Exception:
                    self._erase = True
                    raise
            logger.info("LanceDB maintenance took %.1f s (%d rows): %s", time.monotonic() - started, rows, stats)
        except Exception:  # maintenance is best effort: the next writes schedule it again
            logger.warning("LanceDB index maintenance failed", exc_info=True)
        self._next_allowed = time.monotonic() + DUTY_FACTOR * (time.monotonic() - started)
        if versions is None or await self._versions() != versions:
            self._changed()
        if self._commits or self._cleanup_due or self._erase:
            # Commits landed while this ran (their quiet timer may have fired meanwhile), a clean-up fell due,
            # or an erasure waits for its interval: look again later.
            self._arm(max(QUIET_S, self._next_erase - time.monotonic()) if self._erase else QUIET_S)

    async def _versions(self) -> list[int] | None:
        """Every table's version (``None`` if one cannot be read): a run that changed them leaves versions to
        remove an interval later."""
        try:
            return [await table.version() for table in self._tables]
        except Exception:
            return None

    async def _optimize(self, rows: int) -> Any:
        """Each table's ``optimize``, tried again while concurrent writes preempt its compaction (under a steady
        stream of replacements every run was preempted, so fragments piled up and memory grew with them)."""
        logger.info("LanceDB maintenance: optimizing %d chunks", rows)
        stats = await retried(partial(self._chunks.optimize, cleanup_older_than=self._cleanup_after))
        for table in self._tables[1:]:
            await retried(partial(table.optimize, cleanup_older_than=self._cleanup_after))
        return stats
