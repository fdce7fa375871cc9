"""The two searches of hybrid retrieval, each prefiltered to one tenant's knowledge base."""

from __future__ import annotations

from typing import Any

import msgspec

from service.models import Passage
from service.providers.base import Vectors
from service.store.filters import kb_filter
from service.store.tables import HIT_COLUMNS

__all__ = ["text_search", "vector_search"]


async def vector_search(table: Any, tenant_id: str, kb_id: str, vector: Vectors, k: int) -> list[Passage]:
    """The ``k`` chunks nearest to ``vector``, scored by cosine similarity."""
    rows = await (
        table.query()
        .nearest_to(vector)
        .distance_type("cosine")
        .where(kb_filter(tenant_id, kb_id))
        .select([*HIT_COLUMNS, "_distance"])
        .limit(k)
        .to_list()
    )
    return [_passage(row, 1.0 - float(row["_distance"])) for row in rows]


async def text_search(table: Any, tenant_id: str, kb_id: str, query: str, k: int) -> list[Passage]:
    """The ``k`` chunks that best match ``query`` by full-text search, scored by BM25."""
    rows = await (
        table.query()
        .nearest_to_text(query, columns="text")
        .where(kb_filter(tenant_id, kb_id))
        .select([*HIT_COLUMNS, "_score"])
        .limit(k)
        .to_list()
    )
    return [_passage(row, float(row["_score"])) for row in rows]


def _passage(row: dict[str, Any], score: float) -> Passage:
    return msgspec.convert({**row, "score": score}, Passage)
