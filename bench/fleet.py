"""Every HTTP server under test, their shared Redis and OTLP sink, the knowledge base they answer from, and
the once-a-second ``/metrics`` scraper.

Variants (each its own warm process on the server core):

========================  ====================================================================================
``raw``                   a bare ASGI callable on uvicorn returning a fixed JSON body
``litestar``              one Litestar route returning the same body
``cached_off``            ``ragwatch serve``, chat answered from the answer cache in Redis, ``OTEL_SDK_DISABLED``
``cached_on``             the same with telemetry on (below) and the default trace sampling (errors, slow, 10 %)
``cached_full``           the same with every trace exported (``RAGWATCH_TRACE_SAMPLE_SHARE=1``)
``uncached_off``          ``ragwatch serve`` with all three caches off: embed, hybrid search, extractive answer
``uncached_on``           the same with telemetry on, default sampling
``guide``                 the guide's own stack answering the same cached chat from the same Redis
                          (:mod:`bench.guide_stack`: FastAPI, python-jose, slowapi, aiocache,
                          prometheus-fastapi-instrumentator, structlog; untraced)
========================  ====================================================================================

*Telemetry on*: every span recorded (``OTEL_TRACES_SAMPLER=always_on``), traces (as the in-process sampler
keeps them), metrics and logs exported over OTLP/HTTP to the sink, the access log record of every request
(over OTLP, following its trace's sampling decision), and ``/metrics`` scraped every second while the variant is
under load. *Off* is only
``OTEL_SDK_DISABLED=true``; the JSON access log on stdout is not OpenTelemetry and stays as in production.

Every ragwatch variant authenticates a JWT and runs the Redis rate limiter on each chat (limits set so high
that it never refuses), and all of them share one Redis and one LanceDB directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.corpus import Corpus
from bench.load import HttpRequest
from bench.procs import OtlpSink, RedisServer, Server, ragwatch_server, uvicorn_server
from service.auth import ADMIN, MEMBER, mint_token

JWT_SECRET = "bench-secret-long-enough-for-hs256-0123456789abcdef"
TENANT = "bench"
USER = "alice"
CACHED_QUESTION = "How many days of paid vacation does every employee get?"
HUGE = "1000000000"
RAGWATCH_VARIANTS = ("cached_off", "cached_on", "cached_full", "uncached_off", "uncached_on")
TELEMETRY_ON = {
    "OTEL_TRACES_SAMPLER": "always_on",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_SERVICE_NAME": "ragwatch-bench",
}
EVERY_TRACE = {"RAGWATCH_TRACE_SAMPLE_SHARE": "1"}
CACHES_OFF = {
    "RAGWATCH_CACHE_EMBEDDINGS_ENABLED": "false",
    "RAGWATCH_CACHE_RETRIEVAL_ENABLED": "false",
    "RAGWATCH_CACHE_ANSWERS_ENABLED": "false",
}


class Scraper(threading.Thread):
    """GET ``/metrics`` of the current target once a second, as Prometheus would; counts what it did."""

    def __init__(self) -> None:
        super().__init__(name="metrics-scraper", daemon=True)
        self.target: Server | None = None
        self.scrapes = 0
        self.failures = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop_event.wait(1.0):
                target = self.target
                if target is None:
                    continue
                try:
                    ok = client.get(target.url + "/metrics").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.scrapes += 1
                self.failures += 0 if ok else 1

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


class Fleet:
    def __init__(self, work: Path, *, kb_chunks: int, questions: int) -> None:
        self.work = work
        self.kb_chunks = kb_chunks
        self.question_count = questions
        self.redis = RedisServer(work / "redis")
        self.sink = OtlpSink(work)
        self.scraper = Scraper()
        self.servers: dict[str, Server] = {}
        self.kb_id = ""
        self.token = mint_token(JWT_SECRET, TENANT, USER, [ADMIN, MEMBER], 6 * 3600)
        self.requests: dict[str, HttpRequest] = {}
        self.setup_info: dict[str, Any] = {}
        self.served: Counter[str] = Counter()
        """Requests each variant answered under load (warm-ups included), to relate spans and logs to."""

    # --- life cycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        self.redis.start()
        self.sink.start()
        common = {
            "RAGWATCH_DATA_DIR": str(self.work / "data"),
            "RAGWATCH_JWT_SECRET": JWT_SECRET,
            "RAGWATCH_REDIS_URL": self.redis.url,
            "RAGWATCH_RATE_LIMIT_PER_MINUTE": HUGE,
            "RAGWATCH_RATE_LIMIT_PER_HOUR": HUGE,
            "RAGWATCH_RATE_LIMIT_TENANT_PER_MINUTE": HUGE,
            "RAGWATCH_RATE_LIMIT_TENANT_PER_HOUR": HUGE,
            "RAGWATCH_MAX_BODY_BYTES": str(64 * 1024 * 1024),
            "RAGWATCH_LOG_LEVEL": "INFO",
            "RAGWATCH_LOG_FORMAT": "json",
        }
        on = {**TELEMETRY_ON, "OTEL_EXPORTER_OTLP_ENDPOINT": self.sink.url}
        off = {"OTEL_SDK_DISABLED": "true"}
        self.servers = {
            "raw": uvicorn_server("raw", "bench.apps:raw_app", self.work),
            "litestar": uvicorn_server("litestar", "bench.apps:litestar_app", self.work),
            "cached_off": ragwatch_server("cached_off", self.work, {**common, **off}),
            "cached_on": ragwatch_server("cached_on", self.work, {**common, **on}),
            "cached_full": ragwatch_server("cached_full", self.work, {**common, **on, **EVERY_TRACE}),
            "uncached_off": ragwatch_server("uncached_off", self.work, {**common, **off, **CACHES_OFF}),
            "uncached_on": ragwatch_server("uncached_on", self.work, {**common, **on, **CACHES_OFF}),
            "guide": uvicorn_server(
                "guide",
                "bench.guide_stack:app",
                self.work,
                {"GUIDE_REDIS_URL": self.redis.url, "GUIDE_JWT_SECRET": JWT_SECRET, "GUIDE_LIMIT": HUGE},
                ready_path="/health/live",
            ),
        }
        # The first ragwatch process creates the LanceDB tables; the others open them once it is ready.
        self.servers["cached_off"].start().wait_ready()
        for name, server in self.servers.items():
            if name != "cached_off":
                server.start()
        for server in self.servers.values():
            server.wait_ready()
        self.scraper.start()

    def stop(self) -> None:
        self.scraper.stop()
        for server in self.servers.values():
            server.stop()
        self.sink.stop()
        self.redis.stop()

    # --- the knowledge base --------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Create the knowledge base, ingest ``kb_chunks`` chunks, fold them into the indexes, warm the cache."""
        started = time.perf_counter()
        headers = {"Authorization": f"Bearer {self.token}"}
        first = self.servers["cached_off"]
        corpus = Corpus(seed=5)
        paragraphs = corpus.paragraphs(self.kb_chunks)
        with httpx.Client(base_url=first.url, headers=headers, timeout=300) as client:
            reply = client.post("/v1/knowledge-bases", json={"name": "bench"})
            reply.raise_for_status()
            self.kb_id = reply.json()["id"]
            handbook = (
                "Vacation policy.\n\nEvery employee gets twenty-five days of paid vacation per year. "
                "Unused vacation days expire at the end of March of the following year."
            )
            client.post(
                f"/v1/knowledge-bases/{self.kb_id}/documents", json={"title": "Handbook", "text": handbook}
            ).raise_for_status()
            per_document = 1000
            for start in range(0, len(paragraphs), per_document):
                text = "\n\n".join(paragraphs[start : start + per_document])
                client.post(
                    f"/v1/knowledge-bases/{self.kb_id}/documents",
                    json={"title": f"Manual {start // per_document}", "text": text},
                ).raise_for_status()
            ingested = time.perf_counter()
            optimize_s = self._fold_into_indexes()
            detail = client.get(f"/v1/knowledge-bases/{self.kb_id}").json()
        questions = [corpus.question_about(paragraphs[i]) for i in range(0, len(paragraphs), 97)]
        questions = questions[: self.question_count]
        self.requests = self._requests(questions)
        self._warm_cache()
        self.setup_info = {
            "kb_chunks": detail["chunk_count"],
            "kb_documents": detail["document_count"],
            "ingest_over_http_s": round(ingested - started, 2),
            "index_fold_s": round(optimize_s, 2),
            "uncached_questions": len(questions),
        }

    def _fold_into_indexes(self) -> float:
        """Run LanceDB's optimize on the chunks table, so every row is in the full-text index.

        The service folds new rows into its indexes in the background at most once a minute; a long-running
        server has done so long before its traffic peaks, so the benchmark does it once up front.
        """
        import lancedb  # noqa: PLC0415 - only this step opens the store from the orchestrator

        async def fold() -> float:
            started = time.perf_counter()
            db = await lancedb.connect_async(str(self.work / "data" / "lancedb"))
            table = await db.open_table("chunks")
            # Every ragwatch variant folds new rows in the background too, and eight of them may commit just
            # before this does: LanceDB then refuses it as a (retryable) conflict, so it tries again for a while.
            attempts = 30
            for attempt in range(attempts):
                try:
                    await table.optimize()
                    break
                except Exception:  # a concurrent maintenance commit of a server: try again
                    if attempt == attempts - 1:
                        raise
                    await asyncio.sleep(1 + attempt % 3)
            for _ in range(100):
                stats = await table.index_stats("text_idx")
                if stats is None or stats.num_unindexed_rows == 0:
                    break
                await asyncio.sleep(0.2)
            db.close()  # type: ignore[no-untyped-call]
            return time.perf_counter() - started

        value = asyncio.run(fold())
        time.sleep(1.0)  # past RAGWATCH_READ_CONSISTENCY_S: every server sees the new version
        return value

    def _requests(self, questions: list[str]) -> dict[str, HttpRequest]:
        chat_headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        cached_body = json.dumps({"kb_id": self.kb_id, "question": CACHED_QUESTION})
        uncached_bodies = tuple(json.dumps({"kb_id": self.kb_id, "question": q}) for q in questions)
        cached = HttpRequest("POST", "/v1/chat", chat_headers, (cached_body,))
        uncached = HttpRequest("POST", "/v1/chat", chat_headers, uncached_bodies)
        plain = HttpRequest("GET", "/")
        return {
            "raw": plain,
            "litestar": plain,
            "cached_off": cached,
            "cached_on": cached,
            "cached_full": cached,
            "uncached_off": uncached,
            "uncached_on": uncached,
            "guide": cached,
        }

    def _warm_cache(self) -> None:
        """Ask the cached question once (the answer is then in Redis for every process) and check each
        variant answers as expected: 200, cached where it should be, an answer with citations otherwise."""
        headers = {"Authorization": f"Bearer {self.token}"}
        for name, server in self.servers.items():
            request = self.requests[name]
            with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
                if request.method == "GET":
                    reply = client.get(request.path)
                    reply.raise_for_status()
                    continue
                for body in request.bodies[:2]:
                    reply = client.post(request.path, content=body, headers={"Content-Type": "application/json"})
                    if reply.status_code != 200:
                        raise RuntimeError(f"{name}: chat answered {reply.status_code}: {reply.text[:300]}")
                again = client.post(
                    request.path, content=request.bodies[0], headers={"Content-Type": "application/json"}
                )
                again.raise_for_status()
                cached, expected = bool(again.json()["cached"]), name.startswith("cached") or name == "guide"
                if cached != expected:
                    raise RuntimeError(f"{name}: expected cached={expected}, got {cached}")
                if not again.json()["citations"]:
                    raise RuntimeError(f"{name}: the answer cites nothing: {again.text[:300]}")

    # --- what the phases read ----------------------------------------------------------------------------

    def metrics_text(self, name: str) -> str:
        return httpx.get(self.servers[name].url + "/metrics", timeout=10).text

    def record_rss(self, phase: str) -> None:
        for server in self.servers.values():
            server.record_rss(phase)

    def implementations(self) -> dict[str, dict[str, str]]:
        return {name: server.implementation() for name, server in self.servers.items()}

    @contextlib.contextmanager
    def scraping(self, name: str) -> Any:
        """Scrape ``name``'s ``/metrics`` every second while the block runs, if its telemetry is on."""
        if name.endswith("_on"):
            self.scraper.target = self.servers[name]
        try:
            yield
        finally:
            self.scraper.target = None
