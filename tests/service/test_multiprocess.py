"""Several service processes sharing one LanceDB location behave as one service."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from redis import Redis

from tests.support import GENEROUS_LIMITS, RedisServer, auth, metric_total, serving_processes, wait_until


@pytest.fixture(scope="module")
def two_processes(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Two `ragwatch serve` processes on one data directory and one Redis, as the README asks of replicas,
    each with its own client for tenant acme."""
    # A Redis database of this module's own: the active tenants it counts are this module's only.
    redis_url = redis_server.url.removesuffix("/0") + "/5"
    with serving_processes(
        2, tmp_path_factory.mktemp("shared"), RAGWATCH_REDIS_URL=redis_url, **GENEROUS_LIMITS
    ) as started:
        clients = [running.client(auth()) for running in started]
        yield clients[0], clients[1]
        for client in clients:
            client.close()


def _visible_within(deadline_s: float, probe: httpx.Client, path: str) -> float:
    """Seconds until ``path`` answers 200 through ``probe``; fails past ``deadline_s``."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        if probe.get(path).status_code == 200:
            return time.monotonic() - start
        time.sleep(0.05)
    pytest.fail(f"{path} was not visible through the other process within {deadline_s}s")


def _shared_kb(writer: httpx.Client, reader: httpx.Client, name: str) -> str:
    """A knowledge base created through ``writer``, once it is visible through ``reader`` (within a second)."""
    kb_id: str = writer.post("/v1/knowledge-bases", json={"name": name}).json()["id"]
    _visible_within(1.0, reader, f"/v1/knowledge-bases/{kb_id}")
    return kb_id


def test_a_knowledge_base_written_through_one_process_is_visible_through_another_within_a_second(
    two_processes: tuple[httpx.Client, httpx.Client],
) -> None:
    writer, reader = two_processes
    kb_id = writer.post("/v1/knowledge-bases", json={"name": "shared"}).json()["id"]

    waited = _visible_within(1.0, reader, f"/v1/knowledge-bases/{kb_id}")

    assert waited <= 1.0


def test_a_document_written_through_one_process_is_searchable_through_another_within_a_second(
    two_processes: tuple[httpx.Client, httpx.Client],
) -> None:
    writer, reader = two_processes
    kb_id = _shared_kb(writer, reader, "shared docs")
    text = "The quarterly offsite happens in Lisbon. Everyone travels on the Tuesday before."
    writer.post(f"/v1/knowledge-bases/{kb_id}/documents", json={"title": "Offsite", "text": text, "id": "offsite"})

    start = time.monotonic()
    answer = ""
    while time.monotonic() - start < 1.0 and "Lisbon" not in answer:
        answer = reader.post("/v1/chat", json={"kb_id": kb_id, "question": "Where is the offsite?"}).json()["answer"]
    assert "Lisbon" in answer


def test_concurrent_writers_in_two_processes_neither_lose_nor_duplicate_documents(
    two_processes: tuple[httpx.Client, httpx.Client],
) -> None:
    first, second = two_processes
    kb_id = _shared_kb(first, second, "contended")

    def write(job: tuple[int, httpx.Client]) -> int:
        number, client = job
        # Half the writes target one shared id from both processes; the rest are distinct documents.
        doc_id = "shared-doc" if number % 2 == 0 else f"doc-{number}"
        body = {"title": f"Doc {number}", "text": f"Document number {number}. It mentions token{number}.", "id": doc_id}
        return client.post(f"/v1/knowledge-bases/{kb_id}/documents", json=body).status_code

    jobs = [(n, first if n % 4 < 2 else second) for n in range(24)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(write, jobs))

    assert statuses == [201] * len(jobs)
    time.sleep(0.6)  # past the read-consistency interval
    documents = first.get(f"/v1/knowledge-bases/{kb_id}/documents").json()["data"]
    ids = sorted(d["document_id"] for d in documents)
    assert ids == sorted({"shared-doc"} | {f"doc-{n}" for n in range(24) if n % 2})
    detail = second.get(f"/v1/knowledge-bases/{kb_id}").json()
    assert detail["document_count"] == 13
    assert detail["chunk_count"] == 13


def test_both_processes_report_the_tenants_active_in_either_as_rag_active_tenants(
    two_processes: tuple[httpx.Client, httpx.Client],
) -> None:
    first, second = two_processes
    for client, tenant in ((first, "north"), (second, "south"), (first, "acme"), (second, "acme")):
        assert client.get("/v1/knowledge-bases", headers=auth(tenant)).status_code == 200

    def active(client: httpx.Client) -> float:
        return metric_total(client, "rag_active_tenants")

    deadline = time.monotonic() + 15  # each process publishes what it saw every 5 seconds
    while (active(first), active(second)) != (3, 3) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (active(first), active(second)) == (3, 3)


def test_every_key_the_processes_write_to_redis_expires(
    two_processes: tuple[httpx.Client, httpx.Client], redis_server: RedisServer
) -> None:
    """The README tells operators to run Redis with ``volatile-lru``: only keys with a TTL can be evicted, so
    every key ragwatch writes (limits, caches, generations, active tenants) must have one."""
    first, second = two_processes
    kb_id = _shared_kb(first, second, "expiring")
    first.post(f"/v1/knowledge-bases/{kb_id}/documents", json={"title": "Doc", "text": "Keys expire in Redis."})
    for client in (first, second):
        assert client.post("/v1/chat", json={"kb_id": kb_id, "question": "Do keys expire?"}).status_code == 200
    redis = Redis.from_url(redis_server.url.removesuffix("/0") + "/5")
    # Each process publishes the tenants it saw every five seconds.
    wait_until(lambda: redis.exists("rw:active-tenants"), what="the active tenants set")

    keys = list(redis.scan_iter(count=1000))
    ttls = {key.decode(): redis.ttl(key) for key in keys}
    redis.close()

    assert {"rw:active-tenants"} <= ttls.keys()
    assert any(key.startswith("rw:rl:") for key in ttls)
    assert any(":gen:" in key for key in ttls)
    assert {key: ttl for key, ttl in ttls.items() if ttl < 0} == {}
