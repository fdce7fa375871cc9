"""``python -m bench.eval DATASET``: retrieval quality on a BEIR dataset, through a running ``ragwatch serve``.

The corpus is uploaded through ``POST /v1/knowledge-bases/{kb}/documents`` (one document per request, by
four clients), each query asked through ``POST /v1/knowledge-bases/{kb}/search`` with ``top_k`` 100, and
the passages' documents (first appearance counts) ranked against the qrels. Beside it, in the same run, a plain
BM25 baseline (``bm25s``: lower-cased words, no stemming, no stop words) over the same title and text. Reported:
nDCG@10, Recall@10, Recall@100 for both, ingestion documents/s, search p50/p95.

``--tune`` runs the *train* queries instead: each query's candidates are fetched once by the service's own
retriever (in this process, on the data the server ingested), fused with every ``RAGWATCH_LEXICAL_WEIGHT`` of a
grid by the service's own fusion, and the best weight is reported: that is how the default was chosen. Test
queries are never used for tuning.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bm25s
import httpx
import msgspec

from bench import beir
from bench.fleet import HUGE, JWT_SECRET
from bench.procs import Server, ragwatch_server
from service.auth import ADMIN, mint_token
from service.chat import weighted_fusion
from service.config import load_settings
from service.container import build_container
from service.models import ID_PATTERN, Passage
from telemetry import disabled_telemetry

__all__ = ["main"]

CLIENTS = 4
TOP_K = 100
TUNING_GRID = tuple(round(0.05 * step, 2) for step in range(21))
TENANT = "eval"
RESULTS = Path(__file__).parent / "results"
WHERE_TO_GET = (
    "BEIR datasets: https://github.com/beir-cellar/beir (SciFact: "
    "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/scifact.zip); unzip and pass the folder "
    "that holds corpus.jsonl, queries.jsonl and qrels/"
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.eval", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="a BEIR dataset folder")
    parser.add_argument("--split", default="test", help="the qrels split to evaluate (default test)")
    parser.add_argument("--tune", action="store_true", help="tune RAGWATCH_LEXICAL_WEIGHT on the train split")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where eval.json and eval.md go")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="server settings")
    args = parser.parse_args(argv)
    if not (args.dataset / "queries.jsonl").exists():
        print(f"bench.eval: no BEIR dataset at {args.dataset}. {WHERE_TO_GET}", file=sys.stderr)
        return 2
    split = "train" if args.tune else args.split
    dataset = beir.load(args.dataset, split)
    print(f"{args.dataset.name}: {len(dataset.documents):,} documents, {len(dataset.queries):,} {split} queries")
    settings = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory(prefix="ragwatch-eval-") as scratch:
        work = Path(scratch)
        report = _tune(work, dataset, settings) if args.tune else _evaluate(work, dataset, settings)
    report |= {"dataset": args.dataset.name, "split": split, "date": datetime.now(UTC).isoformat(timespec="seconds")}
    report["baseline"] = _bm25_baseline(dataset)
    name = "eval-tune" if args.tune else "eval"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(render(report))
    print(render(report))
    return 0


def _evaluate(work: Path, dataset: beir.Dataset, settings: dict[str, str]) -> dict[str, Any]:
    with _served(work, settings) as (server, client):
        kb_id, ids, ingestion = _ingest(server, client, dataset)
        searched = _search(client, kb_id, dataset, ids)
    return {"ragwatch": {**searched, "ingestion": ingestion, "settings": settings}}


def _tune(work: Path, dataset: beir.Dataset, settings: dict[str, str]) -> dict[str, Any]:
    """Ingest through the service, then fuse each query's candidates (fetched once, by the service's own
    retriever in this process) with every weight of the grid: the same fusion the search route runs."""
    with _served(work, settings) as (server, client):
        kb_id, ids, ingestion = _ingest(server, client, dataset)
    found, latencies = asyncio.run(_candidates(_environment(work, settings), kb_id, dataset))
    back = {service: original for original, service in ids.items()}
    runs = {}
    for weight in TUNING_GRID:
        rankings = {
            query: _documents(weighted_fusion(vector_hits, text_hits, weight, TOP_K), back)
            for query, (vector_hits, text_hits) in found.items()
        }
        runs[str(weight)] = {"metrics": beir.mean_metrics(rankings, dataset.qrels)}
        print(f"  lexical weight {weight}: nDCG@10 {runs[str(weight)]['metrics']['ndcg@10']:.4f}", flush=True)
    best = max(runs, key=lambda weight: runs[weight]["metrics"]["ndcg@10"])
    chosen = {**runs[best], "queries": len(found), "search_ms": _percentiles(latencies)}
    rrf = {
        query: _documents(_reciprocal_rank(vector_hits, text_hits), back)
        for query, (vector_hits, text_hits) in found.items()
    }
    return {
        "ragwatch": {**chosen, "ingestion": ingestion, "settings": settings},
        "tuning": runs,
        "best": best,
        "reciprocal_rank_fusion": {"metrics": beir.mean_metrics(rrf, dataset.qrels)},
    }


def _reciprocal_rank(vector_hits: list[Passage], text_hits: list[Passage], k: int = 60) -> list[Passage]:
    """Reciprocal-rank fusion (k 60) of the same candidates, the method fusion replaced: for comparison."""
    scores: dict[str, float] = {}
    hits = {hit.chunk_id: hit for hit in [*vector_hits, *text_hits]}
    for ranking in (vector_hits, text_hits):
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + 1.0 / (k + rank)
    return [hits[chunk] for chunk, _ in sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:TOP_K]]


async def _candidates(
    environment: dict[str, str], kb_id: str, dataset: beir.Dataset
) -> tuple[dict[str, tuple[list[Passage], list[Passage]]], list[float]]:
    container = build_container(load_settings(environment), telemetry=disabled_telemetry())
    await container.start()
    found: dict[str, tuple[list[Passage], list[Passage]]] = {}
    latencies: list[float] = []
    try:
        for query_id, text in dataset.queries.items():
            started = time.perf_counter()
            found[query_id] = await container.retriever.candidates(TENANT, kb_id, text, TOP_K)
            latencies.append(time.perf_counter() - started)
    finally:
        await container.aclose()
    return found, latencies


def _documents(passages: list[Passage], back: dict[str, str]) -> list[str]:
    """The documents of ``passages`` in the order of their first passage, by the dataset's ids."""
    ranking: list[str] = []
    for passage in passages:
        document = back[passage.document_id]
        if document not in ranking:
            ranking.append(document)
    return ranking


def _percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"p50": 0.0, "p95": 0.0}
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {"p50": 1000 * statistics.median(latencies), "p95": 1000 * quantiles[94]}


def _environment(work: Path, settings: dict[str, str]) -> dict[str, str]:
    limits = ("PER_MINUTE", "PER_HOUR", "TENANT_PER_MINUTE", "TENANT_PER_HOUR")
    return {
        "RAGWATCH_DATA_DIR": str(work / "data"),
        "RAGWATCH_JWT_SECRET": JWT_SECRET,
        **{f"RAGWATCH_RATE_LIMIT_{name}": HUGE for name in limits},
        **settings,
    }


@contextmanager
def _served(work: Path, settings: dict[str, str]) -> Iterator[tuple[Server, httpx.Client]]:
    """``ragwatch serve`` on ``work/data`` with ``settings``, and an admin client of its tenant."""
    server = ragwatch_server("eval", work, _environment(work, settings)).start()
    try:
        server.wait_ready()
        token = mint_token(JWT_SECRET, TENANT, "eval", [ADMIN], 6 * 3600)
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
            yield server, client
    except Exception:
        print(f"the server's last log lines:\n{server.tail(60)}", file=sys.stderr)
        raise
    finally:
        server.stop()


def _ingest(server: Server, client: httpx.Client, dataset: beir.Dataset) -> tuple[str, dict[str, str], dict[str, Any]]:
    """Upload every document (four clients); the knowledge base, the service's id of each document, the rate."""
    kb_id: str = client.post("/v1/knowledge-bases", json={"name": "eval"}).raise_for_status().json()["id"]
    ids = {document.id: _service_id(document.id) for document in dataset.documents}
    url = f"/v1/knowledge-bases/{kb_id}/documents"

    def upload(document: beir.Document) -> None:
        body = {"title": document.title or document.id, "text": document.text or document.title, "id": ids[document.id]}
        client.post(url, json=body).raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(upload, dataset.documents))
    seconds = time.perf_counter() - started
    print(f"  ingested {len(dataset.documents):,} documents in {seconds:.1f} s", flush=True)
    return (
        kb_id,
        ids,
        {"documents": len(dataset.documents), "seconds": seconds, "documents_per_s": len(dataset.documents) / seconds},
    )


def _service_id(document_id: str) -> str:
    """The dataset's id when the service accepts it as one, else a stable stand-in."""
    if re.fullmatch(ID_PATTERN, document_id):
        return document_id
    return "d" + hashlib.sha256(document_id.encode()).hexdigest()[:32]


def _search(client: httpx.Client, kb_id: str, dataset: beir.Dataset, ids: dict[str, str]) -> dict[str, Any]:
    """Every query through the search route, one at a time: the metrics and the latency."""
    back = {service: original for original, service in ids.items()}
    url = f"/v1/knowledge-bases/{kb_id}/search"
    rankings: dict[str, list[str]] = {}
    latencies: list[float] = []
    for query_id, text in dataset.queries.items():
        started = time.perf_counter()
        reply = client.post(url, json={"query": text, "top_k": TOP_K}).raise_for_status()
        latencies.append(time.perf_counter() - started)
        passages = msgspec.convert(reply.json()["results"], list[Passage])
        rankings[query_id] = _documents(passages, back)
    return {
        "metrics": beir.mean_metrics(rankings, dataset.qrels),
        "search_ms": _percentiles(latencies),
        "queries": len(latencies),
    }


def _bm25_baseline(dataset: beir.Dataset) -> dict[str, Any]:
    """Plain BM25 (``bm25s`` defaults: k1 1.5, b 0.75; no stemming, no stop words) over title and text."""
    texts = [f"{document.title} {document.text}".strip() for document in dataset.documents]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords=None, show_progress=False), show_progress=False)
    ids = list(dataset.queries)
    tokens = bm25s.tokenize([dataset.queries[query] for query in ids], stopwords=None, show_progress=False)
    found, _ = retriever.retrieve(tokens, k=min(TOP_K, len(texts)), show_progress=False)
    rankings = {query: [dataset.documents[i].id for i in row] for query, row in zip(ids, found, strict=True)}
    return {
        "method": "bm25s (k1 1.5, b 0.75), no stemming, no stop words",
        "metrics": beir.mean_metrics(rankings, dataset.qrels),
    }


def render(report: dict[str, Any]) -> str:
    ours, baseline = report["ragwatch"], report["baseline"]
    settings = ", ".join(f"{name}={value}" for name, value in ours["settings"].items()) or "the defaults"
    lines = [
        f"# Retrieval quality: {report['dataset']} ({report['split']} queries, {ours['queries']:,})",
        "",
        f"Run of {report['date']}, "
        + (
            "candidates from the service's retriever fused with each weight below (the best one in the first row)"
            if "tuning" in report
            else f"through `POST /v1/knowledge-bases/{{kb}}/search` (top_k {TOP_K})"
        )
        + f"; settings: {settings}.",
        "",
        "| Retriever | nDCG@10 | Recall@10 | Recall@100 |",
        "|---|---|---|---|",
    ]
    for name, run in (
        ("ragwatch (hybrid, offline default)", ours),
        (f"BM25 baseline ({baseline['method']})", baseline),
    ):
        metrics = run["metrics"]
        lines.append(
            f"| {name} | {metrics['ndcg@10']:.3f} | {metrics['recall@10']:.3f} | {metrics['recall@100']:.3f} |"
        )
    ingestion = ours["ingestion"]
    lines += [
        "",
        f"Ingestion: {ingestion['documents']:,} documents, one per request by {CLIENTS} clients, in "
        f"{ingestion['seconds']:.1f} s ({ingestion['documents_per_s']:.1f} documents/s). Search latency, one "
        f"client: p50 {ours['search_ms']['p50']:.1f} ms, p95 {ours['search_ms']['p95']:.1f} ms.",
    ]
    if "tuning" in report:
        rrf = report["reciprocal_rank_fusion"]["metrics"]
        lines += [
            "",
            f"Reciprocal-rank fusion (k 60) of the same candidates: nDCG@10 {rrf['ndcg@10']:.4f}, Recall@100 "
            f"{rrf['recall@100']:.4f}.",
            "",
            "| RAGWATCH_LEXICAL_WEIGHT | nDCG@10 | Recall@100 |",
            "|---|---|---|",
        ]
        for weight, run in report["tuning"].items():
            mark = " (best)" if weight == report["best"] else ""
            lines.append(f"| {weight}{mark} | {run['metrics']['ndcg@10']:.4f} | {run['metrics']['recall@100']:.4f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
