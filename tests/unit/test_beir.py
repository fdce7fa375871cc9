"""The BEIR metrics and dataset layout of ``make eval``, checked by hand-computed values."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest

from bench import beir


def test_ndcg_is_one_for_the_ideal_order_and_discounts_by_log_rank() -> None:
    relevant = {"a": 2, "b": 1}

    assert beir.ndcg_at(["a", "b", "x"], relevant, 10) == 1.0
    expected = (1 / math.log2(2) + 2 / math.log2(3)) / (2 / math.log2(2) + 1 / math.log2(3))
    assert beir.ndcg_at(["b", "a"], relevant, 10) == pytest.approx(expected)
    assert beir.ndcg_at(["x", "y"], relevant, 10) == 0.0


def test_ndcg_only_counts_the_first_k() -> None:
    assert beir.ndcg_at(["x", "a"], {"a": 1}, 1) == 0.0
    assert beir.ndcg_at(["x", "a"], {"a": 1}, 2) == pytest.approx(1 / math.log2(3))


def test_recall_is_the_share_of_relevant_documents_in_the_first_k() -> None:
    assert beir.recall_at(["a", "x", "b"], {"a": 1, "b": 1}, 2) == 0.5
    assert beir.recall_at(["a", "x", "b"], {"a": 1, "b": 1}, 3) == 1.0


def test_means_count_a_query_without_a_ranking_as_zero() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}

    metrics = beir.mean_metrics({"q1": ["a"]}, qrels)

    assert metrics == {"ndcg@10": 0.5, "recall@10": 0.5, "recall@100": 0.5}


@pytest.mark.parametrize("packed", [False, True])
def test_a_dataset_is_read_in_beirs_layout_with_only_judged_queries_of_the_split(tmp_path: Path, packed: bool) -> None:
    corpus = "\n".join(
        json.dumps(row) for row in [{"_id": "d1", "title": "T", "text": "x"}, {"_id": "d2", "text": "y"}]
    )
    if packed:
        (tmp_path / "corpus.jsonl.gz").write_bytes(gzip.compress(corpus.encode()))
    else:
        (tmp_path / "corpus.jsonl").write_text(corpus)
    (tmp_path / "queries.jsonl").write_text('{"_id": "1", "text": "q one"}\n{"_id": "2", "text": "q two"}\n')
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\td2\t1\n1\td1\t0\n")

    dataset = beir.load(tmp_path, "test")

    assert [(d.id, d.title, d.text) for d in dataset.documents] == [("d1", "T", "x"), ("d2", "", "y")]
    assert dataset.queries == {"1": "q one"}
    assert dataset.qrels == {"1": {"d2": 1}}
