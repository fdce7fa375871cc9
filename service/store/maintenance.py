"""Upkeep of the chunks table: its columns and indexes, and compaction in the background.

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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import lancedb
import pyarrow as pa

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


class IndexMaintenance:
    def __init__(self, chunks: Any, ann_index_min_rows: int) -> None:
        self._chunks = chunks
        self._ann_index_min_rows = ann_index_min_rows
        self._task: asyncio.Task[None] | None = None
        self._last = 0.0  # the first commit of a process starts a run
        self._next_allowed = 0.0
        self._commits = 0
        self._quiet: asyncio.TimerHandle | None = None

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

    def schedule(self) -> None:
        """Count a commit, and start a run in the background when one is due (see the module's docstring)."""
        self._commits += 1
        self._arm(QUIET_S)
        if self._commits >= COMMITS_PER_RUN or time.monotonic() - self._last >= _INTERVAL_S:
            self._start()

    def _arm(self, delay_s: float) -> None:
        if self._quiet is not None:
            self._quiet.cancel()
        self._quiet = asyncio.get_running_loop().call_later(delay_s, self._start)

    def _start(self) -> None:
        if self._commits == 0 or (self._task is not None and not self._task.done()):
            return
        wait_s = self._next_allowed - time.monotonic()
        if wait_s > 0:  # the last run was recent for what it cost: try again once the duty cycle allows
            self._arm(max(wait_s, QUIET_S))
            return
        self._last = time.monotonic()
        self._commits = 0
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def wait(self) -> None:
        """Let a maintenance run in progress finish, and start no other (at shutdown)."""
        if self._quiet is not None:
            self._quiet.cancel()
        if self._task is not None:
            await self._task

    async def _has_index(self, column: str) -> bool:
        return any(index.columns == [column] for index in await self._chunks.list_indices())

    async def run(self) -> None:
        """One maintenance step: an ANN index once the table reaches the threshold, then ``optimize``."""
        try:
            rows = await self._chunks.count_rows()
            if rows >= self._ann_index_min_rows and not await self._has_index("vector"):
                await self._chunks.create_index(
                    "vector", config=lancedb.index.HnswSq(distance_type="cosine"), replace=False
                )
            stats = await self._chunks.optimize()
            logger.info("LanceDB maintenance took %.1f s (%d rows): %s", time.monotonic() - self._last, rows, stats)
        except Exception:  # maintenance is best effort: the next writes schedule it again
            logger.warning("LanceDB index maintenance failed", exc_info=True)
        self._next_allowed = time.monotonic() + DUTY_FACTOR * (time.monotonic() - self._last)
        if self._commits and self._quiet is not None and not self._quiet.cancelled():
            # Commits landed while this ran, and their quiet timer may have fired meanwhile: look again later.
            self._arm(QUIET_S)
