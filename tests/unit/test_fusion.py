"""Fusion of the vector and full-text hits: a weighted sum of scores normalised over each list."""

from __future__ import annotations

import pytest

from service.chat import weighted_fusion
from service.models import Passage


def hit(chunk: str, score: float = 0.5) -> Passage:
    return Passage(
        document_id=f"doc-{chunk}", chunk_id=chunk, title=f"Title {chunk}", score=score, text=f"text {chunk}"
    )


def test_a_passage_best_in_both_lists_scores_one() -> None:
    fused = weighted_fusion([hit("a", 0.9), hit("b", 0.4)], [hit("a", 12.0), hit("c", 3.0)], 0.7, 5)

    assert fused[0].chunk_id == "a"
    assert fused[0].score == 1.0


def test_scores_are_the_weighted_sum_of_min_max_normalised_scores() -> None:
    vector = [hit("a", 0.9), hit("b", 0.7), hit("c", 0.5)]
    text = [hit("c", 20.0), hit("b", 15.0), hit("d", 10.0)]

    fused = {p.chunk_id: p.score for p in weighted_fusion(vector, text, 0.6, 5)}

    assert fused == pytest.approx({"a": 0.4 * 1.0, "b": 0.4 * 0.5 + 0.6 * 0.5, "c": 0.6 * 1.0, "d": 0.0})


def test_how_far_ahead_a_passage_is_counts_not_only_its_rank() -> None:
    """Reciprocal-rank fusion would tie ``far`` and ``near`` (each first in one list); the scores do not."""
    vector = [hit("near", 0.81), hit("far", 0.80), hit("other", 0.2)]
    text = [hit("far", 30.0), hit("near", 2.0), hit("other", 1.0)]

    fused = weighted_fusion(vector, text, 0.5, 5)

    assert [p.chunk_id for p in fused][:2] == ["far", "near"]


@pytest.mark.parametrize(("weight", "first"), [(1.0, "lexical"), (0.0, "semantic")])
def test_the_lexical_weight_decides_between_the_lists(weight: float, first: str) -> None:
    vector = [hit("semantic", 0.9), hit("lexical", 0.3)]
    text = [hit("lexical", 9.0), hit("semantic", 1.0)]

    assert weighted_fusion(vector, text, weight, 5)[0].chunk_id == first


def test_each_chunk_appears_once_with_its_own_fields() -> None:
    fused = weighted_fusion([hit("a", 0.9), hit("b", 0.8)], [hit("b", 12.0), hit("a", 7.5)], 0.7, 5)

    assert sorted(p.chunk_id for p in fused) == ["a", "b"]
    for passage in fused:
        assert passage.title == f"Title {passage.chunk_id}"
        assert passage.text == f"text {passage.chunk_id}"
        assert 0.0 <= passage.score <= 1.0


def test_ties_are_broken_by_chunk_id_so_every_replica_orders_alike() -> None:
    fused = weighted_fusion([hit("m")], [hit("c")], 0.5, 5)

    assert [p.chunk_id for p in fused] == ["c", "m"]


def test_at_most_limit_passages_are_returned_best_first() -> None:
    ranking = [hit(f"c{i:02d}", 1.0 - i / 100) for i in range(20)]

    fused = weighted_fusion(ranking, [], 0.7, 3)

    assert [p.chunk_id for p in fused] == ["c00", "c01", "c02"]
    assert [p.score for p in fused] == sorted((p.score for p in fused), reverse=True)


def test_nothing_found_fuses_to_nothing() -> None:
    assert weighted_fusion([], [], 0.7, 5) == []
