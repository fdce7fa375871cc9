"""Retrieval alone: the service's own LanceDB queries on a chunks table of N rows spread over ten tenants.

Two steps, each its own process (``python -m bench.retrieval build|query``):

- ``build`` writes the table through :class:`service.store.Store` (its schema, its full-text index) in
  batches of 10,000 rows, then runs the store's own maintenance, which builds the HNSW index when the table
  reaches ``--ann-min-rows`` (the service's ``RAGWATCH_ANN_INDEX_MIN_ROWS``) and folds every row into the
  indexes. It may use both cores: building is set-up, not a measured figure (its time is reported).
- ``query`` runs pinned to the server core and times, for the largest and the smallest tenant, the vector,
  full-text and hybrid searches exactly as the service issues them, an exact NumPy scan over the same
  tenant's vectors (the physical floor: one matrix-vector product and a partial sort), and recall@10 of the
  vector search against that exact scan.

Vectors are 384-wide, drawn around 1,000 random centres and normalized (real embeddings cluster; uniform
random vectors would be an unrealistically hard case for an ANN index); queries are rows of the tenant
with noise added. Texts come from :mod:`bench.corpus`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench.corpus import Corpus
from bench.stats import percentiles_ms
from service.chat import weighted_fusion
from service.store import Store
from service.store.search import text_search, vector_search
from service.store.tables import chunk_schema

DIMENSIONS = 384
TENANT_SHARES = (0.40, 0.20, 0.10, 0.08, 0.06, 0.05, 0.04, 0.03, 0.02, 0.02)
"""Ten tenants: one large (40 % of the rows) down to two small ones (2 % each)."""
KB = "kb-main"
BATCH = 10_000
CANDIDATES = 15
"""Rows each search asks for: the service's ``min(top_k * 3, 100)`` with the default ``top_k`` of 5."""
MIN_SIMILARITY = 0.2


def tenant_of(shares: tuple[float, ...], rows: int) -> np.ndarray:
    bounds = np.cumsum(np.asarray(shares)) * rows
    return np.searchsorted(bounds, np.arange(rows), side="right").clip(0, len(shares) - 1)


def clustered_vectors(rng: np.random.Generator, rows: int, centres: int = 1000, spread: float = 0.5) -> np.ndarray:
    means = rng.standard_normal((centres, DIMENSIONS)).astype(np.float32)
    labels = rng.integers(0, centres, rows)
    vectors = means[labels] + spread * rng.standard_normal((rows, DIMENSIONS)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


async def build(directory: Path, rows: int, ann_min_rows: int, seed: int) -> dict[str, Any]:
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    store = await Store(
        str(directory), dimensions=DIMENSIONS, read_consistency_s=0.5, ann_index_min_rows=ann_min_rows
    ).open()
    tenants = tenant_of(TENANT_SHARES, rows)
    vectors = clustered_vectors(rng, rows)
    texts = Corpus(seed=seed).texts(rows)
    schema = chunk_schema(DIMENSIONS)
    generated = time.perf_counter()
    for start in range(0, rows, BATCH):
        stop = min(rows, start + BATCH)
        count = stop - start
        index = np.arange(start, stop)
        columns: dict[str, Any] = {
            "chunk_id": [f"{KB}:doc{i // 50}:{i % 50}" for i in index],
            "tenant_id": [f"t{t:02d}" for t in tenants[start:stop]],
            "kb_id": [KB] * count,
            "document_id": [f"doc{i // 50}" for i in index],
            "chunk_index": (index % 50).astype(np.int32),
            "chunk_count": [50] * count,
            "title": [f"Document {i // 50}" for i in index],
            "text": texts[start:stop],
            "document_text": [None] * count,
            "document_bytes": [4000] * count,
            "metadata": ["{}"] * count,
            "created_at": ["2026-01-01T00:00:00.000+00:00"] * count,
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors[start:stop].ravel()), DIMENSIONS),
            "page": [None] * count,
            "section": [None] * count,
        }
        await store._chunks.add(pa.Table.from_pydict(columns, schema=schema))
    written = time.perf_counter()
    await store.maintain()  # the service's own step: HNSW from ann_min_rows rows, then optimize()
    indexed = time.perf_counter()
    indices = await store._chunks.list_indices()
    await store.close()
    return {
        "rows": rows,
        "ann_index": any(i.columns == ["vector"] for i in indices),
        "ann_min_rows": ann_min_rows,
        "index_types": sorted(str(i.index_type) for i in indices),
        "generate_s": round(generated - started, 2),
        "write_s": round(written - generated, 2),
        "index_s": round(indexed - written, 2),
        "rows_per_s_written": round(rows / max(written - generated, 1e-9)),
    }


async def _timed(samples: list[float], work: Any) -> Any:
    started = time.perf_counter()
    result = await work
    samples.append(time.perf_counter() - started)
    return result


async def query(directory: Path, queries: int, seed: int) -> dict[str, Any]:
    store = Store(str(directory), dimensions=DIMENSIONS, read_consistency_s=0.5, ann_index_min_rows=1 << 30)
    await store.open()
    table = await store._snapshot()
    rows = await table.count_rows()
    ann = any(i.columns == ["vector"] for i in await table.list_indices())
    rng = np.random.default_rng(seed + 1)
    corpus = Corpus(seed=seed + 1)
    result: dict[str, Any] = {"rows": rows, "ann_index": ann, "queries": queries, "tenants": {}}
    sizes = {"large": "t00", "small": f"t{len(TENANT_SHARES) - 1:02d}"}
    for label, tenant in sizes.items():
        data = await table.query().where(f"tenant_id = '{tenant}'").select(["chunk_id", "vector", "text"]).to_arrow()
        ids = data["chunk_id"].to_pylist()
        matrix = np.asarray(data["vector"].combine_chunks().flatten(), dtype=np.float32).reshape(-1, DIMENSIONS)
        texts = data["text"].to_pylist()
        picks = rng.integers(0, len(ids), queries)
        noise = 0.5 * rng.standard_normal((queries, DIMENSIONS)).astype(np.float32) / np.sqrt(DIMENSIONS)
        probes = matrix[picks] + noise
        probes /= np.linalg.norm(probes, axis=1, keepdims=True)
        words = [" ".join(corpus.rng.choice(texts[p].split(), size=3, replace=False)) for p in picks]
        timings: dict[str, list[float]] = {"vector": [], "full_text": [], "hybrid": [], "numpy_exact": []}
        recalls: list[float] = []
        # One untimed pass of each kind: the first query opens files and loads index pages.
        await vector_search(table, tenant, KB, probes[0], CANDIDATES)
        await text_search(table, tenant, KB, words[0], CANDIDATES)
        for probe, text in zip(probes, words, strict=True):
            hits = await _timed(timings["vector"], vector_search(table, tenant, KB, probe, CANDIDATES))
            await _timed(timings["full_text"], text_search(table, tenant, KB, text, CANDIDATES))
            started = time.perf_counter()
            vector_hits, text_hits = await store.hybrid_search(tenant, KB, probe, text, CANDIDATES)
            relevant = [hit for hit in vector_hits if hit.score >= MIN_SIMILARITY]
            weighted_fusion(relevant, text_hits, 0.7, 5)
            timings["hybrid"].append(time.perf_counter() - started)
            started = time.perf_counter()
            scores = matrix @ probe
            top = np.argpartition(-scores, 10)[:10]
            exact = top[np.argsort(-scores[top])]
            timings["numpy_exact"].append(time.perf_counter() - started)
            truth = {ids[i] for i in exact}
            recalls.append(len(truth & {hit.chunk_id for hit in hits[:10]}) / 10)
        result["tenants"][label] = {
            "tenant": tenant,
            "rows": len(ids),
            "latency_ms": {kind: percentiles_ms(samples) for kind, samples in timings.items()},
            "recall_at_10": round(float(np.mean(recalls)), 4),
            "recall_at_10_min": round(float(np.min(recalls)), 4),
        }
    await store.close()
    result["blas"] = _blas()
    return result


def _blas() -> list[dict[str, Any]]:
    """Which BLAS kernel the NumPy scan ran on (threadpoolctl), for the record."""
    try:
        from threadpoolctl import threadpool_info  # noqa: PLC0415 - bench extra
    except ImportError:
        return []
    keys = ("internal_api", "version", "architecture", "num_threads")
    return [{key: info.get(key) for key in keys} for info in threadpool_info()]


def main() -> None:
    parser = argparse.ArgumentParser(description="retrieval benchmark steps")
    parser.add_argument("step", choices=["build", "query"])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--ann-min-rows", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.step == "build":
        outcome = asyncio.run(build(args.dir, args.rows, args.ann_min_rows, args.seed))
    else:
        outcome = asyncio.run(query(args.dir, args.queries, args.seed))
    args.out.write_text(json.dumps(outcome, indent=2))


if __name__ == "__main__":
    main()
