"""Load shedding: at most ``RAGWATCH_MAX_CONCURRENT_REQUESTS`` chat, search and ingestion requests in flight per
process; the next one gets a 503 ``overloaded`` problem with ``Retry-After`` at once, never a place in a queue.

The LLM is the fake OpenAI-compatible server (tests/fake_openai.py), slowed down or stalled so that requests
stay in flight as long as a test needs; everything else is the real service over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from tests.fake_openai import CHAT, FakeOpenAI, fake_openai, openai_env
from tests.support import (
    GENEROUS_LIMITS,
    HANDBOOK,
    PROBLEM_BASE,
    assert_problem,
    auth,
    create_kb,
    documents_url,
    ingest,
    live_server,
    make_settings,
    metric_total,
    serving_process,
    wait_until,
)

__all__ = ["fake_openai"]  # the fixture, imported for pytest

QUESTION = "How many days of paid vacation does an employee get?"
LONG_ANSWER = " ".join(f"Word{n}" for n in range(40)) + " [1]."


@contextmanager
def ragwatch(data_dir: Path, fake: FakeOpenAI, capacity: int, **env: str) -> Iterator[tuple[httpx.Client, str]]:
    """A ragwatch server of ``capacity`` slots backed by ``fake``, an admin client, and a knowledge base holding
    the handbook."""
    settings = make_settings(
        data_dir, **openai_env(fake.base_url, RAGWATCH_MAX_CONCURRENT_REQUESTS=str(capacity), **env)
    )
    with live_server(settings) as server, server.client(auth()) as client:
        kb_id = create_kb(client, "handbook")
        ingest(client, kb_id, title="Handbook", text=HANDBOOK)
        yield client, kb_id


@contextmanager
def stream_in_flight(client: httpx.Client, kb_id: str, question: str = QUESTION) -> Iterator[None]:
    """A streamed chat whose first delta has arrived and whose provider then stalls: it holds its slot for the
    block, and hangs up at its end. The fake must stall (``stall_after_chunks``)."""
    request = {"kb_id": kb_id, "question": question, "stream": True}
    with client.stream("POST", "/v1/chat", json=request) as response:
        assert response.status_code == 200, response.read()
        lines = response.iter_lines()  # kept: a line iterator dropped half-read closes the connection
        assert next(lines) == "event: delta"
        yield


def in_flight(client: httpx.Client, action: str | None = None) -> float:
    return metric_total(client, "rag_requests_in_flight", **({"action": action} if action else {}))


def wait_until_no_slot_is_taken(client: httpx.Client) -> None:
    wait_until(
        lambda: in_flight(client) == 0, timeout_s=10, what="every slot given back", context=lambda: in_flight(client)
    )


def assert_overloaded(response: httpx.Response) -> None:
    assert_problem(response, 503, "overloaded", detail=True)
    assert response.headers["retry-after"] == "1"


# --- a flood -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """One request and its answer over a connection of its own, timed from the request's first byte sent to
    the answer's last byte received."""

    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float


def _http_request(path: str, body: object = None, headers: Mapping[str, str] | None = None) -> bytes:
    """An HTTP/1.1 request asking the server to close the connection once it has answered."""
    content = b"" if body is None else json.dumps(body).encode()
    lines = [f"{'GET' if body is None else 'POST'} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(content)}"]
    return "\r\n".join([*lines, "", ""]).encode() + content


async def _exchange(connection: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes) -> Exchange:
    reader, writer = connection
    started = time.perf_counter()
    writer.write(request)
    answer = await reader.read()  # to the end: the server closes the connection once it has answered
    seconds = time.perf_counter() - started
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    return Exchange(int(status_line.split()[1]), headers, body, seconds)


async def _flood(port: int, kb_id: str, count: int, flood: int) -> tuple[list[Exchange], list[Exchange]]:
    """``count`` chats sent at once, each with its own question (not asked in an earlier ``flood``), while
    ``/health/live`` is asked every 20 ms until they are all answered: the chats' exchanges, and the health
    checks'.

    Raw HTTP on connections opened beforehand (as clients of a busy service have them), so that what is timed
    is the server: an HTTP client library preparing 60 requests in this one event loop would take longer than
    the server takes to answer them."""
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(count)]
    requests = [
        _http_request("/v1/chat", {"kb_id": kb_id, "question": f"{QUESTION} ({flood}.{n})"}, auth())
        for n in range(count)
    ]
    health: list[Exchange] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            started = time.perf_counter()
            checked = await _exchange(await asyncio.open_connection("127.0.0.1", port), _http_request("/health/live"))
            health.append(replace(checked, seconds=time.perf_counter() - started))  # connecting included
            await asyncio.sleep(0.02)

    prober = asyncio.create_task(probe())
    chats = await asyncio.gather(*(_exchange(c, r) for c, r in zip(connections, requests, strict=True)))
    done.set()
    await prober
    return list(chats), health


FLOODS = 3
"""Floods a test may send to see the targets met once: a test machine busy with other work can slow the server
down for a moment, while a real fault (requests queued rather than shed, a blocked event loop) misses the
targets every time."""


def test_a_flood_of_chats_past_capacity_is_shed_at_once_while_capacity_are_served_and_health_stays_fast(
    fake_openai: FakeOpenAI, data_dir: Path
) -> None:
    """The issue's target: 60 concurrent chats against a slow provider and a capacity of 8, on a real
    ``ragwatch serve`` process (its own interpreter, so that this process's clients and fake LLM do not slow
    it down). Every flood must shed exactly the excess; the timings must hold in one of ``FLOODS``."""
    env: dict[str, Any] = openai_env(fake_openai.base_url, RAGWATCH_MAX_CONCURRENT_REQUESTS="8", **GENEROUS_LIMITS)
    with serving_process(data_dir, **env) as served, served.client(auth()) as client:
        kb_id = create_kb(client, "handbook")
        ingest(client, kb_id, title="Handbook", text=HANDBOOK)
        fake_openai.delay_s = 1.5  # each call: the question's embedding, then the answer

        timings: list[tuple[float, float]] = []
        for flood in range(FLOODS):
            chats, health = asyncio.run(_flood(int(served.url.rsplit(":", 1)[1]), kb_id, 60, flood))

            served_ones = [chat for chat in chats if chat.status == 200]
            shed = [chat for chat in chats if chat.status != 200]
            assert len(served_ones) == 8
            assert len(shed) == 52
            for chat in shed:
                assert chat.status == 503
                assert chat.headers["content-type"].startswith("application/problem+json")
                assert json.loads(chat.body)["type"] == PROBLEM_BASE + "overloaded"
                assert chat.headers["retry-after"] == "1"
            assert min(chat.seconds for chat in served_ones) >= 3.0  # two slow provider calls each: not queued
            assert len(health) >= 20
            assert all(check.status == 200 for check in health)
            timings.append((max(chat.seconds for chat in shed), max(check.seconds for check in health)))
            if timings[-1][0] < 0.5 and timings[-1][1] < 0.2:
                break
        else:
            raise AssertionError(f"(slowest shed chat, slowest health check) of each flood, in s: {timings}")

        # Every slot is free again: the next chat is served, and the metrics say what happened.
        fake_openai.delay_s = 0
        after = client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION})
        assert after.status_code == 200, after.text
        floods = len(timings)
        assert metric_total(client, "rag_requests_shed_total", action="chat") == 52 * floods
        assert metric_total(client, "rag_requests_total", endpoint="/v1/chat", status="503") == 52 * floods
        assert in_flight(client) == 0
        assert metric_total(client, "rag_requests_capacity") == 8


# --- what counts, and what never does -------------------------------------------------------------------


def test_while_every_slot_is_taken_chat_search_and_ingestion_are_shed_in_their_routes_error_shape(
    fake_openai: FakeOpenAI, data_dir: Path
) -> None:
    fake_openai.stall_after_chunks = 3
    with ragwatch(data_dir, fake_openai, capacity=1) as (client, kb_id), stream_in_flight(client, kb_id):
        chat = client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION})
        document = client.post(documents_url(kb_id), json={"title": "Notes", "text": "Parking is free."})
        upload = client.post(documents_url(kb_id), files={"file": ("notes.md", b"# Notes\n\nParking is free.")})
        search = client.post(f"/v1/knowledge-bases/{kb_id}/search", json={"query": "vacation"})
        reindex = client.post(f"/v1/knowledge-bases/{kb_id}/reindex")
        completion = client.post(
            "/v1/chat/completions", json={"model": kb_id, "messages": [{"role": "user", "content": QUESTION}]}
        )

        for response in (chat, document, upload, search, reindex):
            assert_overloaded(response)
        assert completion.status_code == 503
        assert completion.headers["retry-after"] == "1"
        assert completion.json()["error"]["code"] == "overloaded"  # OpenAI's shape, as every error of that route
        assert completion.json()["error"]["type"] == "api_error"
        assert in_flight(client, "chat") == 1
        assert metric_total(client, "rag_requests_shed_total", action="chat") == 2
        assert metric_total(client, "rag_requests_shed_total", action="ingest") == 3
        assert metric_total(client, "rag_requests_shed_total", action="search") == 1


def test_health_metrics_and_other_routes_are_never_shed(fake_openai: FakeOpenAI, data_dir: Path) -> None:
    fake_openai.stall_after_chunks = 3
    with ragwatch(data_dir, fake_openai, capacity=1) as (client, kb_id), stream_in_flight(client, kb_id):
        for path in (
            "/health/live",
            "/health/ready",
            "/metrics",
            "/v1/knowledge-bases",
            f"/v1/knowledge-bases/{kb_id}",
        ):
            started = time.perf_counter()
            response = client.get(path)
            assert response.status_code == 200, (path, response.text)
            assert time.perf_counter() - started < 0.5, path
        assert client.get(documents_url(kb_id)).status_code == 200
        assert client.post("/v1/knowledge-bases", json={"name": "another"}).status_code == 201
        assert metric_total(client, "rag_requests_shed_total") == 0


def test_a_streamed_answer_holds_its_slot_until_its_last_event(fake_openai: FakeOpenAI, data_dir: Path) -> None:
    fake_openai.answer, fake_openai.chunk_delay_s = LONG_ANSWER, 0.05  # about 2 s of streaming
    with ragwatch(data_dir, fake_openai, capacity=1) as (client, kb_id):
        request = {"kb_id": kb_id, "question": QUESTION, "stream": True}
        with client.stream("POST", "/v1/chat", json=request) as response:
            lines = response.iter_lines()
            assert next(lines) == "event: delta"
            assert_overloaded(client.post("/v1/chat", json={"kb_id": kb_id, "question": "Other?"}))
            rest = list(lines)
        assert "event: done" in rest

        wait_until_no_slot_is_taken(client)
        assert client.post("/v1/chat", json={"kb_id": kb_id, "question": "Other?"}).status_code == 200


# --- no slot leaks, whatever the end of a request -----------------------------------------------------------


Ending = Callable[[httpx.Client, str, FakeOpenAI], httpx.Response]


def _ask(client: httpx.Client, kb_id: str, label: str, **body: object) -> httpx.Response:
    """A chat with a question of its own (so the answer is not a cached one) that the handbook answers."""
    return client.post("/v1/chat", json={"kb_id": kb_id, "question": f"{QUESTION} ({label})", **body})


def _hang_up_mid_stream(client: httpx.Client, kb_id: str, fake: FakeOpenAI) -> httpx.Response:
    fake.stall_after_chunks = 3
    try:
        with stream_in_flight(client, kb_id, f"{QUESTION} (hang up)"):
            pass
    finally:
        fake.stall_after_chunks = None
    stream = fake.streams[-1]
    assert stream.ended.wait(5)
    assert stream.client_disconnected
    return httpx.Response(200)


def _stream_cut_by_the_provider(client: httpx.Client, kb_id: str, fake: FakeOpenAI) -> httpx.Response:
    fake.cut_after_chunks = 3
    try:
        response = _ask(client, kb_id, "cut", stream=True)
    finally:
        fake.cut_after_chunks = None
    assert "event: error" in response.text
    return response


def _provider_failure(client: httpx.Client, kb_id: str, fake: FakeOpenAI) -> httpx.Response:
    fake.fail_next(1, 500, path=CHAT)
    return _ask(client, kb_id, "fails")


ENDINGS: dict[str, tuple[Ending, int]] = {
    "a whole answer": (lambda client, kb_id, _: _ask(client, kb_id, "whole"), 200),
    "a streamed answer": (lambda client, kb_id, _: _ask(client, kb_id, "streamed", stream=True), 200),
    "a client that hangs up mid-stream": (_hang_up_mid_stream, 200),
    "a stream the provider cuts": (_stream_cut_by_the_provider, 200),
    "a provider error": (_provider_failure, 502),
    "an unknown knowledge base": (lambda client, _, __: _ask(client, "kb_missing", "unknown"), 404),
    "an invalid body": (lambda client, kb_id, _: _ask(client, kb_id, "invalid", top_k="many"), 400),
    "no token": (lambda client, kb_id, _: httpx.post(client.base_url.join("/v1/chat"), json={"kb_id": kb_id}), 401),
    "a file of an unsupported type": (
        lambda client, kb_id, _: client.post(documents_url(kb_id), content=b"x", headers={"content-type": "image/png"}),
        415,
    ),
    "a search of an unknown knowledge base": (
        lambda client, _, __: client.post("/v1/knowledge-bases/kb_missing/search", json={"query": "vacation"}),
        404,
    ),
}


def test_no_ending_of_a_request_leaks_its_slot(fake_openai: FakeOpenAI, data_dir: Path) -> None:
    """With a single slot, each way a request can end is followed by a chat that must be served."""
    with ragwatch(data_dir, fake_openai, capacity=1) as (client, kb_id):
        for name, (end, status) in ENDINGS.items():
            ended = end(client, kb_id, fake_openai)
            assert ended.status_code == status, f"{name}: {ended.text}"
            wait_until_no_slot_is_taken(client)
            served = _ask(client, kb_id, f"after {name}")
            assert served.status_code == 200, f"after {name}: {served.text}"
        assert metric_total(client, "rag_requests_shed_total") == 0


def test_the_default_capacity_serves_a_burst_of_its_size_without_shedding(tmp_path: Path) -> None:
    """32 concurrent uncached chats with the offline answerer, the heaviest burst the default is sized for."""
    with live_server(make_settings(tmp_path)) as server, server.client(auth()) as client:
        kb_id = create_kb(client, "handbook")
        ingest(client, kb_id, title="Handbook", text=HANDBOOK)

        def ask(number: int) -> int:
            body = {"kb_id": kb_id, "question": f"{QUESTION} ({number})"}
            return client.post("/v1/chat", json=body).status_code

        with ThreadPoolExecutor(max_workers=32) as pool:
            statuses = list(pool.map(ask, range(32)))
        assert statuses == [200] * 32
        assert metric_total(client, "rag_requests_capacity") == 32
