"""BEIR datasets and the retrieval metrics BEIR reports, written out so that every figure can be checked.

Layout (BEIR's own): ``corpus.jsonl`` or ``corpus.jsonl.gz`` (``{"_id", "title", "text"}`` per line),
``queries.jsonl`` (``{"_id", "text"}``), ``qrels/<split>.tsv`` (a header, then ``query-id, corpus-id, score``).

Metrics, as ``pytrec_eval`` computes them for BEIR: nDCG@k with the graded relevance of the qrels as gain
(``rel / log2(rank + 1)``, ideal ordering from the qrels), and Recall@k = relevant documents in the top k over
all relevant documents of the query; each averaged over the queries of the split.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Dataset", "Document", "load", "mean_metrics", "ndcg_at", "recall_at"]

Qrels = dict[str, dict[str, int]]
"""Relevance of documents per query: ``{query_id: {document_id: grade}}``, grades above 0 only."""


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class Dataset:
    documents: list[Document]
    queries: dict[str, str]
    qrels: Qrels


def load(folder: Path, split: str = "test") -> Dataset:
    """The corpus, the queries of ``split`` that have judgements, and those judgements."""
    qrels = _qrels(folder / "qrels" / f"{split}.tsv")
    queries = {str(row["_id"]): row["text"] for row in _jsonl(folder / "queries.jsonl") if str(row["_id"]) in qrels}
    documents = [Document(str(row["_id"]), row.get("title") or "", row["text"]) for row in _corpus(folder)]
    return Dataset(documents, queries, {query: qrels[query] for query in queries})


def _corpus(folder: Path) -> Iterator[dict[str, str]]:
    plain, packed = folder / "corpus.jsonl", folder / "corpus.jsonl.gz"
    if plain.exists():
        yield from _jsonl(plain)
    elif packed.exists():
        with gzip.open(packed, "rt", encoding="utf-8") as lines:
            yield from (json.loads(line) for line in lines if line.strip())
    else:
        raise FileNotFoundError(f"no corpus.jsonl or corpus.jsonl.gz in {folder}")


def _jsonl(path: Path) -> Iterator[dict[str, str]]:
    with path.open(encoding="utf-8") as lines:
        yield from (json.loads(line) for line in lines if line.strip())


def _qrels(path: Path) -> Qrels:
    judged: Qrels = {}
    with path.open(encoding="utf-8", newline="") as rows:
        reader = csv.reader(rows, delimiter="\t")
        next(reader, None)  # the header
        for query, document, grade in reader:
            if int(grade) > 0:
                judged.setdefault(query, {})[document] = int(grade)
    return judged


def ndcg_at(ranking: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    gain = sum(relevant.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranking[:k]))
    ideal = sum(grade / math.log2(rank + 2) for rank, grade in enumerate(sorted(relevant.values(), reverse=True)[:k]))
    return gain / ideal if ideal else 0.0


def recall_at(ranking: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    return len(set(ranking[:k]) & set(relevant)) / len(relevant) if relevant else 0.0


def mean_metrics(rankings: Mapping[str, Sequence[str]], qrels: Qrels) -> dict[str, float]:
    """nDCG@10, Recall@10 and Recall@100 averaged over the judged queries (a query without a ranking: 0)."""
    queries = list(qrels)
    rows = [(rankings.get(query, []), qrels[query]) for query in queries]
    count = max(len(rows), 1)
    return {
        "ndcg@10": sum(ndcg_at(ranking, relevant, 10) for ranking, relevant in rows) / count,
        "recall@10": sum(recall_at(ranking, relevant, 10) for ranking, relevant in rows) / count,
        "recall@100": sum(recall_at(ranking, relevant, 100) for ranking, relevant in rows) / count,
    }
