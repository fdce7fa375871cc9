"""Cancellation safety of the Redis cache: a request cancelled in the middle of a Redis command (a client that
hangs up) never leaves the reply on a pooled connection for another request to read. That is the failure behind
redis-py CVE-2023-28858; here it would hand one tenant's cached answer to another.

Redis is reached through a slow proxy (tests/tcp_proxy.py) that delays every chunk of bytes either way, so
commands are on the wire long enough to be cancelled halfway, and a reply left behind would still be on its way
when the connection goes back to the pool. The LLM is the local fake (tests/fake_openai.py) answering
``"You asked: <question>"``, so every answer says which question it belongs to.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest

from service.cache import Cache, CacheBackend
from service.container import build_container
from telemetry import disabled_telemetry
from tests.fake_openai import ECHO_PREFIX, openai_env, running_fake_openai
from tests.support import (
    HANDBOOK,
    LiveServer,
    RedisServer,
    auth,
    create_kb,
    fresh_tenant,
    ingest,
    live_server,
    make_settings,
)
from tests.tcp_proxy import SlowProxy

DELAY_MS = 15
"""Added by the proxy each way: every Redis command takes at least twice this long."""
REDIS_DB = 11
"""This module's own Redis database, so that no other test's keys are in its way."""
SERVICE_ENV = {
    "RAGWATCH_EMBEDDER": "hashing",
    "RAGWATCH_REDIS_TIMEOUT_S": "5",  # slow on purpose, not down: no command may time out
    "RAGWATCH_READ_CONSISTENCY_S": "0",  # no second generation renewal after ingestion to turn hits into misses
    "RAGWATCH_MAX_CONCURRENT_REQUESTS": "1000",  # every storm's chat is served: none may be shed
}
CAUGHT_REDIS_ERRORS = ("ragwatch.cache", "ragwatch.redis")
"""Loggers whose errors mean a reply reached the wrong caller (the cache's key check) or Redis failed."""


@pytest.fixture
def slow_redis(redis_server: RedisServer) -> Iterator[SlowProxy]:
    """This module's database of the test run's redis-server, through a proxy that delays every chunk."""
    with SlowProxy(redis_server.url.removesuffix("/0") + f"/{REDIS_DB}", delay_ms=DELAY_MS) as proxy:
        yield proxy


def caught_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name in CAUGHT_REDIS_ERRORS and record.levelno >= logging.ERROR
    ]


# --- over HTTP: clients that hang up at random moments -------------------------------------------------------

TENANTS = 4
QUESTIONS_PER_TENANT = 12
CHUNK_DELAY_S = 0.005
"""Between the fake LLM's streamed chunks, so that a client can hang up in the middle of a stream."""


@dataclass(frozen=True)
class Asker:
    """A question of one tenant's knowledge base, and the only answer it may get."""

    tenant: str
    kb_id: str
    question: str

    @property
    def expected(self) -> str:
        return ECHO_PREFIX + self.question


@dataclass
class Reply:
    """What one client got before it was done or hung up."""

    asker: Asker
    behaviour: str
    status: int | None = None
    """``None``: the client hung up before the status line."""
    text: str = ""
    """The answer, or as much of a streamed one as arrived."""
    complete: bool = False
    cached: bool | None = None
    problem: str = ""
    """The body of an answer other than 200, or an ``error`` event of a stream."""


def ask_whole(server: LiveServer, asker: Asker, behaviour: str, timeout_s: float = 30) -> Reply:
    """Ask for the whole answer as JSON, hanging up after ``timeout_s`` without one."""
    reply = Reply(asker, behaviour)
    with httpx.Client(base_url=server.url, headers=auth(asker.tenant), timeout=timeout_s) as client:
        try:
            response = client.post("/v1/chat", json={"kb_id": asker.kb_id, "question": asker.question})
        except httpx.TimeoutException:
            return reply
    reply.status = response.status_code
    if response.status_code != 200:
        reply.problem = response.text
        return reply
    body = response.json()
    reply.text, reply.cached, reply.complete = body["answer"], body["cached"], True
    return reply


def ask_streamed(
    server: LiveServer,
    asker: Asker,
    behaviour: str,
    *,
    leave_after_deltas: int | None = None,
    leave_at_end_after_s: float | None = None,
) -> Reply:
    """Ask for the answer as Server-Sent Events; the client hangs up after ``leave_after_deltas`` deltas, or
    ``leave_at_end_after_s`` after the whole answer's text arrived (while the service stores it in the cache,
    before its ``done`` event). Leaving the blocks early closes the connection."""
    reply = Reply(asker, behaviour)
    question = {"kb_id": asker.kb_id, "question": asker.question, "stream": True}
    with (
        httpx.Client(base_url=server.url, headers=auth(asker.tenant), timeout=30) as client,
        client.stream("POST", "/v1/chat", json=question) as response,
    ):
        reply.status = response.status_code
        if response.status_code != 200:
            reply.problem = response.read().decode(errors="replace")
            return reply
        _read_events(response, reply, leave_after_deltas, leave_at_end_after_s)
    return reply


def _read_events(
    response: httpx.Response, reply: Reply, leave_after_deltas: int | None, leave_at_end_after_s: float | None
) -> None:
    event, deltas = "", 0
    for line in response.iter_lines():
        if line.startswith("event:"):
            event = line.removeprefix("event:").strip()
            continue
        if not line.startswith("data:"):
            continue
        data = json.loads(line.removeprefix("data:"))
        if event == "delta":
            reply.text += data["text"]
            deltas += 1
            if deltas == leave_after_deltas:
                return
            if leave_at_end_after_s is not None and reply.text == reply.asker.expected:
                time.sleep(leave_at_end_after_s)  # on the open connection, in this client's own thread
                return
        elif event == "done":
            reply.cached, reply.complete = data["cached"], True
        elif event == "error":
            reply.problem = json.dumps(data)


def together(calls: Sequence[Callable[[], Reply]]) -> list[Reply]:
    """Run every call at once, each in a thread of its own; their replies in order."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def storm(server: LiveServer, askers: Sequence[Asker], rng: np.random.Generator) -> list[Reply]:
    """Every question asked twice at once, by clients of every kind: some wait for their answer, the others
    hang up: at a random moment, mid-stream, or right after the streamed answer, while the service caches it."""
    cached_at_the_latest_s = 3 * CHUNK_DELAY_S + 4 * DELAY_MS / 1000
    kinds: list[Callable[[Asker], Callable[[], Reply]]] = [
        lambda asker: partial(ask_whole, server, asker, "waits for the whole answer"),
        lambda asker: partial(ask_streamed, server, asker, "reads the whole stream"),
        lambda asker: partial(
            ask_whole, server, asker, "hangs up at a random moment", timeout_s=float(rng.uniform(0.001, 2.5))
        ),
        lambda asker: partial(
            ask_streamed, server, asker, "hangs up mid-stream", leave_after_deltas=int(rng.integers(1, 6))
        ),
        lambda asker: partial(
            ask_streamed,
            server,
            asker,
            "hangs up as its answer is cached",
            leave_at_end_after_s=float(rng.uniform(0, cached_at_the_latest_s)),
        ),
    ]
    weights = np.array([1, 1, 1, 1, 3]) / 7  # most where a Redis command is cut off: the cache write
    # Drawn here, in one thread: a numpy generator is not for several threads at once.
    calls = [kinds[int(rng.choice(len(kinds), p=weights))](asker) for asker in [*askers, *askers]]
    order = rng.permutation(len(calls))
    return together([calls[i] for i in order])


def assert_own_answers(replies: Sequence[Reply]) -> None:
    """No reply failed, and every answer, or part of one, is its own question's."""
    failed = [(r.behaviour, r.status, r.problem) for r in replies if r.status not in (None, 200) or r.problem]
    assert not failed, failed
    foreign = [(r.asker.question, r.text) for r in replies if not r.asker.expected.startswith(r.text)]
    assert not foreign, foreign
    cut = [(r.asker.question, r.text) for r in replies if r.complete and r.text != r.asker.expected]
    assert not cut, cut


def test_clients_hanging_up_mid_request_never_make_another_question_get_their_answer(
    tmp_path: Path, slow_redis: SlowProxy, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(28858)
    with running_fake_openai() as fake:
        fake.echo_question = True
        fake.chunk_delay_s = CHUNK_DELAY_S
        settings = make_settings(
            tmp_path, RAGWATCH_REDIS_URL=slow_redis.url, **openai_env(fake.base_url, **SERVICE_ENV)
        )
        with caplog.at_level(logging.WARNING, logger="ragwatch"), live_server(settings) as server:
            askers: list[Asker] = []
            for _ in range(TENANTS):
                tenant = fresh_tenant()
                with server.client(auth(tenant)) as client:
                    kb_id = create_kb(client, "handbook")
                    ingest(client, kb_id, title="Handbook", text=HANDBOOK)
                askers += [
                    Asker(tenant, kb_id, f"How many vacation days does employee {n} of {tenant} get?")
                    for n in range(QUESTIONS_PER_TENANT)
                ]

            stormy = storm(server, askers, rng)
            again = together([partial(ask_whole, server, asker, "asks again") for asker in askers])
            repeated = together(
                [
                    partial(ask_streamed if n % 2 else ask_whole, server, asker, "repeats the question")
                    for n, asker in enumerate(askers)
                ]
            )

    assert_own_answers(stormy)
    assert_own_answers(again)
    assert_own_answers(repeated)
    assert all(r.complete for r in again)
    assert [r.cached for r in repeated] == [True] * len(askers), "a repeated question was not answered from Redis"
    assert not caught_errors(caplog)
    # The storm did what it is for: some clients waited, others hung up. Over HTTP a hang-up cannot cut a Redis
    # command off halfway (a JSON handler is not cancelled, and a streamed answer's cache write is shielded so
    # that an answer already paid for is kept); the next test cancels commands halfway on purpose.
    assert [r for r in stormy if r.complete]
    assert [r for r in stormy if not r.complete]


# --- the cache itself: tasks cancelled in the middle of a command --------------------------------------------

ENTRIES = 96
ROUNDS = 5


class _Entry(msgspec.Struct, array_like=True, frozen=True):
    """A cache entry as Redis holds it: service.cache stores the key it was written for beside the value."""

    key: str
    generation: str
    value: bytes


_decode_entry = msgspec.msgpack.Decoder(_Entry).decode


@dataclass(frozen=True)
class Stored:
    """One answer in the cache: what finds it, its key, and its entry as Redis holds it."""

    tenant: str
    question: str
    key: str
    raw: bytes

    @property
    def value(self) -> bytes:
        return value_of(self.key)


def value_of(key: str) -> bytes:
    return f"the value of {key}".encode()


class Checks:
    """Cache operations whose every reply is checked against what it asked for; mismatches are kept."""

    def __init__(self, cache: Cache, backend: CacheBackend, ttl_s: int) -> None:
        self.cache = cache
        self.backend = backend
        self.ttl_s = ttl_s
        self.wrong: list[str] = []

    async def lookup(self, stored: Stored) -> None:
        """Through the cache, with its own check of the entry's key."""
        found = await self.cache.lookup("answers", stored.tenant, [stored.question])
        if (found.outcome, found.value) != ("hit", stored.value):
            self.wrong.append(f"lookup of {stored.key}: {found.outcome} {found.value!r}")

    async def read(self, *wanted: Stored) -> None:
        """The backend's own reply (``MGET``), before any check of the cache's: each entry must be its key's."""
        raws = await self.backend.get_many([stored.key for stored in wanted])
        entries = [_decode_entry(raw) if raw is not None else None for raw in raws]
        got = [(entry.key, entry.value) if entry is not None else None for entry in entries]
        if got != [(stored.key, stored.value) for stored in wanted]:
            self.wrong.append(f"MGET {[stored.key for stored in wanted]}: {got}")

    async def write(self, stored: Stored) -> None:
        """The same entry again (``SET``): a reply, ``+OK``, that a cancelled write could leave behind."""
        await self.backend.put(stored.key, stored.raw, self.ttl_s)

    async def run(self, tasks: Sequence[Awaitable[None]]) -> tuple[int, int]:
        """Await ``tasks``: how many completed and how many were cancelled; any other end is kept as wrong
        (a reply of another command can fail to decode)."""
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        failed = [o for o in outcomes if o is not None and not isinstance(o, asyncio.CancelledError)]
        self.wrong += [repr(failure) for failure in failed]
        return sum(o is None for o in outcomes), sum(isinstance(o, asyncio.CancelledError) for o in outcomes)


async def test_tasks_cancelled_mid_command_never_hand_their_reply_to_the_next_user_of_the_connection(
    tmp_path: Path, slow_redis: SlowProxy, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(2023_28858)
    settings = make_settings(tmp_path, RAGWATCH_REDIS_URL=slow_redis.url, **SERVICE_ENV)
    telemetry = disabled_telemetry()
    container = build_container(settings, telemetry=telemetry)
    shared, cache = container.shared, container.cache
    checks = Checks(cache, shared.cache, settings.cache.answers_ttl_s)
    completed = cancelled = interrupted = 0
    # One task per entry, all at once on the one pool: a lookup, a read of its key (alone or with another's),
    # or a write; half of them are cancelled within a few round trips of their start.
    jobs: list[Callable[[Stored, Stored], Coroutine[Any, Any, None]]] = [
        lambda mine, _: checks.lookup(mine),
        lambda mine, _: checks.read(mine),
        checks.read,
        lambda mine, _: checks.write(mine),
    ]
    with caplog.at_level(logging.WARNING, logger="ragwatch"):
        try:
            stored = await store_entries(cache, shared.cache)
            interrupted_before = slow_redis.interrupted
            for _ in range(ROUNDS):
                tasks = [
                    asyncio.ensure_future(jobs[int(rng.integers(len(jobs)))](mine, stored[int(rng.integers(ENTRIES))]))
                    for mine in stored
                ]
                loop = asyncio.get_running_loop()
                for chosen in rng.choice(len(tasks), size=len(tasks) // 2, replace=False):
                    loop.call_later(float(rng.uniform(0, 6 * DELAY_MS / 1000)), tasks[int(chosen)].cancel)
                done, gone = await checks.run(tasks)
                completed, cancelled = completed + done, cancelled + gone
            interrupted = slow_redis.interrupted - interrupted_before
            # Then every entry once more, with nothing cancelled.
            await checks.run([*(checks.lookup(mine) for mine in stored), checks.read(*stored)])
            healthy = shared.health.up
        finally:
            await cache.aclose()
            await shared.aclose()

    assert not checks.wrong, checks.wrong
    assert completed > 0
    assert cancelled > 0
    assert interrupted > 0, "no command was cut off in the middle: the test proved nothing"
    assert healthy
    assert not caught_errors(caplog)


async def store_entries(cache: Cache, backend: CacheBackend) -> list[Stored]:
    """:data:`ENTRIES` answers of four tenants, stored through the cache, each its key's own value."""
    tenants = [fresh_tenant() for _ in range(4)]
    asked = [(tenants[n % len(tenants)], f"question {n}") for n in range(ENTRIES)]
    lookups = await asyncio.gather(*(cache.lookup("answers", tenant, [question]) for tenant, question in asked))
    assert {found.outcome for found in lookups} == {"miss"}
    await asyncio.gather(*(cache.store(found, value_of(found.key)) for found in lookups))
    raws = await backend.get_many([found.key for found in lookups])
    assert None not in raws
    return [
        Stored(tenant, question, found.key, bytes(raw or b""))
        for (tenant, question), found, raw in zip(asked, lookups, raws, strict=True)
    ]
