"""Index upkeep of the chunks table: the full-text index, an ANN index once it pays, folding in new rows."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import lancedb

__all__ = ["IndexMaintenance"]

logger = logging.getLogger("ragwatch.store")
_ATTEMPTS = 5
_INTERVAL_S = 60.0


class IndexMaintenance:
    def __init__(self, chunks: Any, ann_index_min_rows: int) -> None:
        self._chunks = chunks
        self._ann_index_min_rows = ann_index_min_rows
        self._task: asyncio.Task[None] | None = None
        self._last = 0.0

    async def ensure_full_text_index(self) -> None:
        """Create the full-text index once; processes starting together may race, and one creation wins."""
        for attempt in range(_ATTEMPTS):
            if await self._has_index("text"):
                return
            try:
                await self._chunks.create_index("text", config=lancedb.index.FTS(), replace=False)
                return
            except (RuntimeError, ValueError):
                await asyncio.sleep(0.05 * (attempt + 1))  # another process created it, or a commit conflicted
        if not await self._has_index("text"):
            raise RuntimeError("the full-text index on chunks.text could not be created")

    def schedule(self) -> None:
        """Fold new rows into the indexes in the background, at most once a minute per process."""
        if self._task is not None and not self._task.done():
            return
        if time.monotonic() - self._last < _INTERVAL_S:
            return
        self._last = time.monotonic()
        self._task = asyncio.create_task(self.run())

    async def wait(self) -> None:
        """Let a maintenance run in progress finish (at shutdown)."""
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
            await self._chunks.optimize()
        except Exception:  # maintenance is best effort: the next write schedules it again
            logger.warning("LanceDB index maintenance failed", exc_info=True)
