"""Reciprocal rank fusion of the vector and full-text rankings."""

from __future__ import annotations

from service.chat import reciprocal_rank_fusion
from service.models import Passage


def hit(chunk: str, score: float = 0.5) -> Passage:
    return Passage(
        document_id=f"doc-{chunk}", chunk_id=chunk, title=f"Title {chunk}", score=score, text=f"text {chunk}"
    )


def test_a_passage_first_in_both_rankings_scores_one() -> None:
    fused = reciprocal_rank_fusion([[hit("a"), hit("b")], [hit("a"), hit("c")]], 5)

    assert fused[0].chunk_id == "a"
    assert fused[0].score == 1.0


def test_a_passage_found_by_both_outranks_one_found_by_either_alone() -> None:
    fused = reciprocal_rank_fusion([[hit("x"), hit("both")], [hit("y"), hit("both")]], 5)

    assert fused[0].chunk_id == "both"
    assert all(0 < p.score <= 1 for p in fused)


def test_each_chunk_appears_once_with_its_own_fields_and_a_fused_score() -> None:
    vector = [hit("a", 0.9), hit("b", 0.8)]
    text = [hit("b", 12.0), hit("a", 7.5)]

    fused = reciprocal_rank_fusion([vector, text], 5)

    assert sorted(p.chunk_id for p in fused) == ["a", "b"]
    for passage in fused:
        assert passage.title == f"Title {passage.chunk_id}"
        assert passage.text == f"text {passage.chunk_id}"
        assert passage.score not in (0.9, 0.8, 12.0, 7.5)


def test_ties_are_broken_by_chunk_id_so_every_replica_orders_alike() -> None:
    fused = reciprocal_rank_fusion([[hit("m")], [hit("c")]], 5)

    assert [p.chunk_id for p in fused] == ["c", "m"]


def test_at_most_limit_passages_are_returned_best_first() -> None:
    ranking = [hit(f"c{i:02d}") for i in range(20)]

    fused = reciprocal_rank_fusion([ranking, []], 3)

    assert [p.chunk_id for p in fused] == ["c00", "c01", "c02"]
    assert [p.score for p in fused] == sorted((p.score for p in fused), reverse=True)


def test_nothing_found_fuses_to_nothing() -> None:
    assert reciprocal_rank_fusion([[], []], 5) == []
