"""Uploads at the rate people make them, over HTTP, against ``ragwatch serve`` pinned to the server core.

- *empty store*: abstract-sized documents (about 1,200 characters, two chunks), uploaded one per request by
  four concurrent clients, as ``ragwatch ingest`` sends a folder, into a fresh store;
- *loaded store*: the same into a store that already holds 50,000 chunks of ten other tenants (written first
  in documents of 100 paragraphs: that rate is reported too);
- *PDF*: a 100-page text PDF, from the start of its upload until a phrase from its last page is found by search.

The clients are threads of the orchestrator, on the load core; each acknowledgement is the server's 201, given
only once the commit holding the document has returned.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.corpus import Corpus
from bench.fleet import HUGE, JWT_SECRET
from bench.procs import Server, cpu_seconds, ragwatch_server
from service.auth import ADMIN, mint_token
from tests.documents import text_pdf

CLIENTS = 4
PER_DOCUMENT = 100


def _client(server: Server, tenant: str) -> httpx.Client:
    token = mint_token(JWT_SECRET, tenant, "bench", [ADMIN], 6 * 3600)
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=300)


def _kb(client: httpx.Client, name: str) -> str:
    reply = client.post("/v1/knowledge-bases", json={"name": name})
    reply.raise_for_status()
    kb_id: str = reply.json()["id"]
    return kb_id


def abstracts(corpus: Corpus, count: int) -> list[str]:
    """Abstract-sized texts: two paragraphs of about 600 characters each."""
    paragraphs = corpus.paragraphs(count * 2)
    return [f"{paragraphs[2 * n][:600]}\n\n{paragraphs[2 * n + 1][:600]}" for n in range(count)]


def upload_rate(server: Server, tenant: str, texts: list[str]) -> dict[str, Any]:
    """``texts`` uploaded one per request (multipart, with a stable id) by :data:`CLIENTS` clients at once."""
    with _client(server, tenant) as client:
        kb_id = _kb(client, "uploads")
        url = f"/v1/knowledge-bases/{kb_id}/documents"
        numbered = iter(enumerate(texts))
        failures = 0

        def worker(_: int) -> int:
            nonlocal failures
            done = 0
            for number, text in numbered:  # the iterator is shared: each text goes to one client
                files = {"file": (f"abstract-{number}.txt", text.encode(), "text/plain")}
                reply = client.post(url, files=files, data={"id": f"abstract-{number}", "title": f"A{number}"})
                if reply.status_code == 201:
                    done += 1
                else:
                    failures += 1
            return done

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            acknowledged = sum(pool.map(worker, range(CLIENTS)))
        seconds = time.perf_counter() - started
        chunks = client.get(f"/v1/knowledge-bases/{kb_id}").json()["chunk_count"]
    return {
        "documents": acknowledged,
        "failures": failures,
        "seconds": round(seconds, 3),
        "documents_per_s": round(acknowledged / seconds, 1),
        "chunks": chunks,
    }


def preload(server: Server, corpus: Corpus, chunks: int) -> dict[str, Any]:
    """``chunks`` chunks for ten other tenants, in documents of :data:`PER_DOCUMENT` paragraphs."""
    paragraphs = corpus.paragraphs(chunks)
    started = time.perf_counter()
    for tenant in range(10):
        with _client(server, f"other-{tenant}") as client:
            kb_id = _kb(client, "preload")
            for start in range(tenant * chunks // 10, (tenant + 1) * chunks // 10, PER_DOCUMENT):
                text = "\n\n".join(paragraphs[start : start + PER_DOCUMENT])
                reply = client.post(f"/v1/knowledge-bases/{kb_id}/documents", json={"title": "Manual", "text": text})
                reply.raise_for_status()
    seconds = time.perf_counter() - started
    return {"chunks": chunks, "seconds": round(seconds, 1), "chunks_per_s": round(chunks / seconds, 1)}


def settle(server: Server, quiet_s: float = 3.0, timeout_s: float = 180.0) -> float:
    """Seconds until the server has used no CPU for ``quiet_s`` (its background compaction of the preload
    done): the loaded store is measured as it stands, not while it is still being tidied."""
    started = time.monotonic()
    last, quiet_since = cpu_seconds(server.pid), time.monotonic()
    while time.monotonic() - started < timeout_s:
        time.sleep(0.5)
        now = cpu_seconds(server.pid)
        if now - last > 0.05:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            break
    return round(time.monotonic() - started, 1)


def pdf_to_searchable(server: Server, pages: int) -> dict[str, Any]:
    """Seconds from the start of a ``pages``-page PDF's upload until search finds its last page."""
    words = ("invoice", "turbine", "glacier", "orchid", "lantern", "quorum", "saffron", "meridian")

    def lines(page: int) -> list[str]:
        return [
            f"Page {page}, line {n}: the {words[(page + n) % 8]} report covers item {page * 100 + n}."
            for n in range(40)
        ]

    last = [*lines(pages), "The closing remarks thank the harbour pilots of Valparaiso."]
    content = text_pdf([lines(page) for page in range(1, pages)] + [last])
    with _client(server, "pdf") as client:
        kb_id = _kb(client, "pdf")
        started = time.perf_counter()
        reply = client.post(f"/v1/knowledge-bases/{kb_id}/documents", files={"file": ("manual.pdf", content)})
        reply.raise_for_status()
        uploaded = time.perf_counter() - started
        query = {"query": "harbour pilots of Valparaiso", "top_k": 1}
        deadline = time.monotonic() + 120
        while True:
            found = client.post(f"/v1/knowledge-bases/{kb_id}/search", json=query).raise_for_status().json()
            if found["results"] and found["results"][0].get("page") == pages:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the last page of the PDF was not found by search: {found}")
            time.sleep(0.01)
        searchable = time.perf_counter() - started
    return {
        "pages": pages,
        "bytes": len(content),
        "chunks": reply.json()["chunks"],
        "upload_seconds": round(uploaded, 3),
        "searchable_seconds": round(searchable, 3),
    }


def measure(work: Path, documents: int, preload_chunks: int, pdf_pages: int) -> dict[str, Any]:
    env = {
        "RAGWATCH_DATA_DIR": str(work / "uploads-data"),
        "RAGWATCH_JWT_SECRET": JWT_SECRET,
        "OTEL_SDK_DISABLED": "true",
        "RAGWATCH_LOG_LEVEL": "WARNING",
        **dict.fromkeys(("RAGWATCH_RATE_LIMIT_PER_MINUTE", "RAGWATCH_RATE_LIMIT_PER_HOUR"), HUGE),
        **dict.fromkeys(("RAGWATCH_RATE_LIMIT_TENANT_PER_MINUTE", "RAGWATCH_RATE_LIMIT_TENANT_PER_HOUR"), HUGE),
    }
    server = ragwatch_server("uploads", work, env).start()
    try:
        server.wait_ready()
        corpus = Corpus(seed=11)
        texts = abstracts(corpus, documents)
        empty = upload_rate(server, "fresh", texts)
        loaded_by = preload(server, corpus, preload_chunks)
        loaded_by["settled_after_s"] = settle(server)
        loaded = upload_rate(server, "loaded", texts)
        pdf = pdf_to_searchable(server, pdf_pages)
    finally:
        server.stop()
    return {"clients": CLIENTS, "empty_store": empty, "preload": loaded_by, "loaded_store": loaded, "pdf": pdf}
