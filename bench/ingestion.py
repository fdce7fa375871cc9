"""Ingestion: chunks per second through the service's own ingest path, batched and one row at a time.

Runs in its own process pinned to the server core (``python -m bench.ingestion``). It builds the service's
object graph with its composition root (:func:`service.container.build_container`), with the offline default
embedder (WordLlama), telemetry off, the in-process cache and LanceDB in a fresh directory, and calls
:meth:`Documents.write` as the documents route does once the upload is parsed (chunk, embed, one
``merge_insert`` per document, cache invalidation).

- *batched*: documents of 100 paragraphs, so each write carries 100 rows;
- *one row at a time*: documents of one paragraph, so each write carries one row;
- *embedder alone*: the same embedder over the same chunk texts, with no write, to show how the time
  splits between embedding and LanceDB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from bench.corpus import Corpus
from service.auth import ADMIN, MEMBER, Principal
from service.chunking import chunk_text
from service.config import load_settings
from service.container import build_container
from service.documents import NewDocument
from service.models import KnowledgeBaseCreate
from telemetry import disabled_telemetry

PER_DOCUMENT = 100


async def measure(directory: Path, batched_documents: int, single_rows: int) -> dict[str, Any]:
    settings = load_settings(
        {
            "RAGWATCH_DATA_DIR": str(directory),
            "RAGWATCH_AUTH_MODE": "dev",
            "RAGWATCH_ANN_INDEX_MIN_ROWS": str(1 << 30),
        }
    )
    container = build_container(settings, telemetry=disabled_telemetry())
    await container.start()
    service = container.documents
    principal = Principal(tenant_id="bench", user_id="ingest", roles=frozenset({ADMIN, MEMBER}))
    kb = (await container.knowledge_bases.create(principal, KnowledgeBaseCreate(name="ingestion"))).value
    corpus = Corpus(seed=23)
    rag = settings.rag

    warmup = corpus.paragraphs(PER_DOCUMENT)
    await service.write(principal, kb.id, NewDocument(title="warm-up", text="\n\n".join(warmup), metadata={}))

    documents = ["\n\n".join(corpus.paragraphs(PER_DOCUMENT)) for _ in range(batched_documents)]
    chunks = 0
    started = time.perf_counter()
    for number, text in enumerate(documents):
        created = await service.write(
            principal, kb.id, NewDocument(title=f"Batch {number}", text=text, metadata={}, document_id=f"b{number}")
        )
        chunks += created.chunks
    batched_s = time.perf_counter() - started

    singles = corpus.paragraphs(single_rows)
    started = time.perf_counter()
    for number, text in enumerate(singles):
        await service.write(
            principal, kb.id, NewDocument(title=f"Row {number}", text=text, metadata={}, document_id=f"r{number}")
        )
    single_s = time.perf_counter() - started

    texts = [piece for text in documents for piece in chunk_text(text, rag.chunk_size, rag.chunk_overlap)]
    started = time.perf_counter()
    await container.providers.embedder.embed(texts)
    embed_s = time.perf_counter() - started
    await container.aclose()
    return {
        "chunks_per_document_batched": PER_DOCUMENT,
        "batched": {"documents": batched_documents, "chunks": chunks, "seconds": round(batched_s, 3)},
        "batched_chunks_per_s": round(chunks / batched_s, 1),
        "single": {"documents": single_rows, "chunks": single_rows, "seconds": round(single_s, 3)},
        "single_chunks_per_s": round(single_rows / single_s, 1),
        "embedder_chunks_per_s": round(len(texts) / embed_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="ingestion benchmark")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--batched-documents", type=int, default=30)
    parser.add_argument("--single-rows", type=int, default=150)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    outcome = asyncio.run(measure(args.dir, args.batched_documents, args.single_rows))
    args.out.write_text(json.dumps(outcome, indent=2))


if __name__ == "__main__":
    main()
