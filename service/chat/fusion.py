"""Reciprocal rank fusion of the vector and full-text rankings."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from service.models import Passage

__all__ = ["RRF_K", "reciprocal_rank_fusion"]

RRF_K = 60


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Passage]], limit: int) -> list[Passage]:
    """Fuse ranked lists by reciprocal rank (k=60), scored 0..1 (1: first in every list).

    Fused by ``chunk_id`` rather than LanceDB's row id (which lancedb's RRFReranker keys on), because the
    vector and full-text queries may read different table versions when a write lands between them. Ties are
    broken by ``chunk_id``, so the order is the same on every replica.
    """
    scores: dict[str, float] = {}
    hits: dict[str, Passage] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + 1.0 / (RRF_K + rank)
            hits.setdefault(hit.chunk_id, hit)
    best = 1.0 / (RRF_K + 1) * max(len(rankings), 1)
    ordered = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return [msgspec.structs.replace(hits[chunk_id], score=round(score / best, 4)) for chunk_id, score in ordered]
