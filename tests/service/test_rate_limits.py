"""Rate limits per tenant and per user, on chat and on ingestion: the real app over HTTP, counters in process
(``memory://``) or in a real redis-server, several service processes sharing one Redis, and Redis going away.

Tests that count within a minute first wait until the current minute has room for them (``_minute_with_room``),
so that no window boundary resets the counters halfway through.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.config import SettingsError
from service.limits import load_overrides
from tests.support import (
    HANDBOOK,
    JWT_SECRET,
    LiveServer,
    RedisServer,
    assert_problem,
    auth,
    create_kb,
    documents_url,
    fresh_tenant,
    ingest,
    live_server,
    make_settings,
    serving_processes,
)

WINDOWS = ("tenant-minute", "tenant-hour", "user-minute", "user-hour")
HUGE = 1_000_000
"""The limit ``make_settings`` gives every window a test does not set itself."""
_POLICY_ITEM = re.compile(r'^"(?P<name>[a-z-]+)";q=(?P<quota>\d+);w=(?P<window>\d+)$')
_RATE_LIMIT = re.compile(r'^"(?P<name>[a-z-]+)";r=(?P<remaining>\d+);t=(?P<reset>\d+)$')


# --- helpers ---------------------------------------------------------------------------------------------


def _minute_with_room(seconds: float = 5.0) -> None:
    """Return once at least ``seconds`` remain in the current minute (waits at most ``seconds``)."""
    left = 60 - time.time() % 60
    if left < seconds:
        time.sleep(left + 0.05)


def _hour_with_room(seconds: float = 20.0) -> None:
    """Return once at least ``seconds`` remain in the current hour (waits at most ``seconds``)."""
    left = 3600 - time.time() % 3600
    if left < seconds:
        time.sleep(left + 0.05)


def policy(response: httpx.Response) -> dict[str, tuple[int, int]]:
    """``RateLimit-Policy`` as ``{name: (quota, window seconds)}``; fails unless every item is well formed."""
    items: dict[str, tuple[int, int]] = {}
    for item in response.headers["RateLimit-Policy"].split(","):
        match = _POLICY_ITEM.match(item.strip())
        assert match, f"malformed RateLimit-Policy item {item!r}"
        items[match["name"]] = (int(match["quota"]), int(match["window"]))
    return items


def rate_limit(response: httpx.Response) -> tuple[str, int, int]:
    """``RateLimit`` as ``(policy name, remaining, seconds to reset)``."""
    match = _RATE_LIMIT.match(response.headers["RateLimit"])
    assert match, f"malformed RateLimit {response.headers['RateLimit']!r}"
    return match["name"], int(match["remaining"]), int(match["reset"])


def has_rate_limit_headers(response: httpx.Response) -> bool:
    return "RateLimit" in response.headers or "RateLimit-Policy" in response.headers


def chat(client: httpx.Client, kb_id: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """Ask ``kb_id`` a question, as the client's caller or as the one of ``headers``."""
    question = {"kb_id": kb_id, "question": "How many vacation days do I get?"}
    return client.post("/v1/chat", json=question, headers=headers)


def create_kb_as(client: httpx.Client, headers: dict[str, str]) -> str:
    response = client.post("/v1/knowledge-bases", json={"name": "handbook"}, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def post_document(client: httpx.Client, kb_id: str, number: int = 0) -> httpx.Response:
    return client.post(documents_url(kb_id), json={"title": f"Handbook {number}", "text": HANDBOOK})


def assert_refused(response: httpx.Response, window: str) -> int:
    """A 429 rate-limited problem naming ``window`` as full, with its headers; returns ``Retry-After``."""
    assert_problem(response, 429, "rate-limited", detail=True)
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit(), retry_after
    seconds = int(retry_after)
    period = policy(response)[window][1]
    assert 1 <= seconds <= period
    name, remaining, reset = rate_limit(response)
    assert (name, remaining) == (window, 0)
    assert reset == seconds
    return seconds


@pytest.fixture(params=["memory", "redis"])
def counters_url(request: pytest.FixtureRequest, redis_server: RedisServer) -> str:
    """``RAGWATCH_REDIS_URL`` of each backend: in process, or the test run's redis-server, emptied first."""
    if request.param == "memory":
        return "memory://"
    redis_server.command("FLUSHALL")
    return redis_server.url


@pytest.fixture
def limited(tmp_path: Path, counters_url: str) -> Iterator[Callable[..., LiveServer]]:
    """``limited(**env)``: a running server with the counters of ``counters_url`` and these settings."""
    numbers = itertools.count()
    with ExitStack() as stack:

        def start(**env: str) -> LiveServer:
            settings = make_settings(tmp_path / f"data{next(numbers)}", RAGWATCH_REDIS_URL=counters_url, **env)
            return stack.enter_context(live_server(settings))

        yield start


@contextmanager
def clients(server: LiveServer, *callers: tuple[str, str]) -> Iterator[list[httpx.Client]]:
    """One client per ``(tenant, user)``, each with an admin token, closed afterwards."""
    opened = [server.client(auth(tenant, user)) for tenant, user in callers]
    try:
        yield opened
    finally:
        for client in opened:
            client.close()


# --- 1. the headers of allowed requests ----------------------------------------------------------------


def test_allowed_chats_carry_every_window_in_ratelimit_policy_and_count_down_by_one(
    limited: Callable[..., LiveServer],
) -> None:
    server = limited(RAGWATCH_RATE_LIMIT_PER_MINUTE="5", RAGWATCH_RATE_LIMIT_TENANT_PER_HOUR="700")
    with clients(server, ("acme", "alice")) as (alice,):
        kb_id = create_kb(alice, "handbook")
        _minute_with_room()

        responses = [chat(alice, kb_id) for _ in range(5)]

    for response in responses:
        assert response.status_code == 200, response.text
        assert policy(response) == {
            "tenant-minute": (HUGE, 60),
            "tenant-hour": (700, 3600),
            "user-minute": (5, 60),
            "user-hour": (HUGE, 3600),
        }
    limits = [rate_limit(response) for response in responses]
    assert [(name, remaining) for name, remaining, _ in limits] == [("user-minute", r) for r in (4, 3, 2, 1, 0)]
    assert all(1 <= reset <= 60 for _, _, reset in limits)


def test_allowed_ingests_carry_every_window_in_ratelimit_policy_and_count_down_by_one(
    limited: Callable[..., LiveServer],
) -> None:
    server = limited(RAGWATCH_RATE_LIMIT_TENANT_PER_MINUTE="4")
    with clients(server, ("acme", "alice")) as (alice,):
        kb_id = create_kb(alice, "handbook")
        _minute_with_room()

        responses = [post_document(alice, kb_id, n) for n in range(4)]

    for response in responses:
        assert response.status_code == 201, response.text
        assert set(policy(response)) == set(WINDOWS)
        assert policy(response)["tenant-minute"] == (4, 60)
    assert [rate_limit(response)[:2] for response in responses] == [("tenant-minute", r) for r in (3, 2, 1, 0)]


def test_a_streamed_chat_carries_the_ratelimit_headers_too(limited: Callable[..., LiveServer]) -> None:
    server = limited(RAGWATCH_RATE_LIMIT_PER_MINUTE="3")
    with clients(server, ("acme", "alice")) as (alice,):
        kb_id = create_kb(alice, "handbook")
        _minute_with_room()

        chat(alice, kb_id)
        response = alice.post("/v1/chat", json={"kb_id": kb_id, "question": "Vacation?", "stream": True})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert policy(response)["user-minute"] == (3, 60)
    assert rate_limit(response)[:2] == ("user-minute", 1)


def test_with_rate_limits_disabled_nothing_is_counted_or_refused(limited: Callable[..., LiveServer]) -> None:
    server = limited(RAGWATCH_RATE_LIMIT_ENABLED="false", RAGWATCH_RATE_LIMIT_PER_MINUTE="1")
    with clients(server, ("acme", "alice")) as (alice,):
        kb_id = create_kb(alice, "handbook")
        _minute_with_room()

        responses = [chat(alice, kb_id) for _ in range(3)] + [post_document(alice, kb_id, n) for n in range(3)]

    assert [response.status_code for response in responses] == [200] * 3 + [201] * 3
    assert not any(has_rate_limit_headers(response) for response in responses)


# --- 2. refusals ------------------------------------------------------------------------------------------


def test_a_chat_over_the_user_minute_limit_is_a_429_problem_with_retry_after_and_ratelimit_headers(
    limited: Callable[..., LiveServer],
) -> None:
    server = limited(RAGWATCH_RATE_LIMIT_PER_MINUTE="2")
    with clients(server, ("acme", "alice")) as (alice,):
        kb_id = create_kb(alice, "handbook")
        _minute_with_room()
        allowed = [chat(alice, kb_id).status_code for _ in range(2)]

        refused = chat(alice, kb_id)

    assert allowed == [200, 200]
    retry_after = assert_refused(refused, "user-minute")
    assert retry_after <= 60
    assert policy(refused)["user-minute"] == (2, 60)
    assert "user per minute limit of 2" in refused.json()["detail"]


def test_an_ingest_over_the_user_minute_limit_is_a_429_problem_and_stores_nothing(
    limited: Callable[..., LiveServer],
) -> None:
    server = limited(RAGWATCH_RATE_LIMIT_PER_MINUTE="1")
    with clients(server, ("acme", "alice")) as (alice,):
        kb_id = create_kb(alice, "handbook")
        _minute_with_room()
        ingest(alice, kb_id, title="First", text=HANDBOOK, id="first")

        refused = alice.post(documents_url(kb_id), json={"title": "Second", "text": HANDBOOK, "id": "second"})
        stored = alice.get(documents_url(kb_id)).json()["data"]

    assert_refused(refused, "user-minute")
    assert [document["document_id"] for document in stored] == ["first"]


def test_the_per_user_limit_refuses_one_user_while_another_user_of_the_same_tenant_still_passes(
    limited: Callable[..., LiveServer],
) -> None:
    server = limited(RAGWATCH_RATE_LIMIT_PER_MINUTE="2")
    with clients(server, ("acme", "alice"), ("acme", "bob")) as (alice, bob):
        kb_id = create_kb(alice, "handbook")
        _minute_with_room()
        assert [chat(alice, kb_id).status_code for _ in range(2)] == [200, 200]

        refused = chat(alice, kb_id)
        passed = chat(bob, kb_id)

    assert_refused(refused, "user-minute")
    assert passed.status_code == 200, passed.text
    assert rate_limit(passed)[:2] == ("user-minute", 1)


def test_the_tenant_limit_refuses_every_user_of_the_tenant_and_no_other_tenant(
    limited: Callable[..., LiveServer],
) -> None:
    server = limited(RAGWATCH_RATE_LIMIT_TENANT_PER_MINUTE="3")
    callers = [("acme", "alice"), ("acme", "bob"), ("acme", "carol"), ("acme", "dave"), ("globex", "erin")]
    with clients(server, *callers) as (alice, bob, carol, dave, erin):
        kb_id = create_kb(alice, "handbook")
        other_kb = create_kb(erin, "handbook")
        _minute_with_room()
        allowed = [chat(client, kb_id).status_code for client in (alice, bob, carol)]

        refused = [chat(client, kb_id) for client in (alice, bob, carol, dave)]
        other_tenant = chat(erin, other_kb)

    assert allowed == [200, 200, 200]
    for response in refused:
        assert_refused(response, "tenant-minute")
    assert other_tenant.status_code == 200, other_tenant.text
    assert rate_limit(other_tenant)[:2] == ("tenant-minute", 2)


def test_chat_and_ingest_are_counted_separately(limited: Callable[..., LiveServer]) -> None:
    server = limited(RAGWATCH_RATE_LIMIT_PER_MINUTE="2")
    with clients(server, ("acme", "alice")) as (alice,):
        kb_id = create_kb(alice, "handbook")
        _minute_with_room()
        chats = [chat(alice, kb_id).status_code for _ in range(3)]

        ingests = [post_document(alice, kb_id, n).status_code for n in range(3)]
        chat_again = chat(alice, kb_id)

    assert chats == [200, 200, 429]
    assert ingests == [201, 201, 429]
    assert_refused(chat_again, "user-minute")


def test_the_overrides_file_raises_one_tenants_limits_and_leaves_the_others_at_the_defaults(
    limited: Callable[..., LiveServer], tmp_path: Path
) -> None:
    overrides = tmp_path / "overrides.json"
    overrides.write_text(json.dumps({"vip": {"per_minute": 4, "tenant_per_minute": 50}}))
    server = limited(
        RAGWATCH_RATE_LIMIT_PER_MINUTE="2",
        RAGWATCH_RATE_LIMIT_TENANT_PER_MINUTE="10",
        RAGWATCH_RATE_LIMIT_OVERRIDES_FILE=str(overrides),
    )
    with clients(server, ("vip", "alice"), ("acme", "alice")) as (vip, plain):
        vip_kb, plain_kb = create_kb(vip, "handbook"), create_kb(plain, "handbook")
        _minute_with_room()

        vip_chats = [chat(vip, vip_kb) for _ in range(5)]
        plain_chats = [chat(plain, plain_kb) for _ in range(3)]

    assert [response.status_code for response in vip_chats] == [200, 200, 200, 200, 429]
    assert policy(vip_chats[0]) == {
        "tenant-minute": (50, 60),
        "tenant-hour": (HUGE, 3600),
        "user-minute": (4, 60),
        "user-hour": (HUGE, 3600),
    }
    assert_refused(vip_chats[-1], "user-minute")
    assert [response.status_code for response in plain_chats] == [200, 200, 429]
    assert policy(plain_chats[0])["user-minute"] == (2, 60)
    assert policy(plain_chats[0])["tenant-minute"] == (10, 60)


def test_a_refused_request_is_not_counted_so_the_limit_neither_drifts_nor_spills_onto_the_tenant(
    limited: Callable[..., LiveServer],
) -> None:
    """Alice's refusals would fill the tenant window if they were counted; Bob still gets exactly the rest."""
    server = limited(RAGWATCH_RATE_LIMIT_PER_MINUTE="3", RAGWATCH_RATE_LIMIT_TENANT_PER_MINUTE="5")
    with clients(server, ("acme", "alice"), ("acme", "bob")) as (alice, bob):
        kb_id = create_kb(alice, "handbook")
        _minute_with_room()
        alice_statuses = [chat(alice, kb_id).status_code for _ in range(10)]

        bob_responses = [chat(bob, kb_id) for _ in range(4)]

    assert alice_statuses == [200] * 3 + [429] * 7
    assert [response.status_code for response in bob_responses] == [200, 200, 429, 429]
    assert rate_limit(bob_responses[0])[:2] == ("tenant-minute", 1)
    assert rate_limit(bob_responses[1])[:2] == ("tenant-minute", 0)
    assert_refused(bob_responses[2], "tenant-minute")


def test_health_metrics_and_get_routes_are_never_limited(limited: Callable[..., LiveServer]) -> None:
    server = limited(RAGWATCH_RATE_LIMIT_PER_MINUTE="1", RAGWATCH_RATE_LIMIT_TENANT_PER_MINUTE="1")
    with clients(server, ("acme", "alice")) as (alice,):
        kb_id = create_kb(alice, "handbook")
        _minute_with_room()
        ingest(alice, kb_id, title="Handbook", text=HANDBOOK, id="handbook")
        assert chat(alice, kb_id).status_code == 200
        assert chat(alice, kb_id).status_code == 429
        assert post_document(alice, kb_id).status_code == 429
        paths = [
            "/health/live",
            "/health/ready",
            "/metrics",
            "/v1/knowledge-bases",
            f"/v1/knowledge-bases/{kb_id}",
            documents_url(kb_id),
            f"{documents_url(kb_id)}/handbook",
        ]

        responses = [alice.get(path) for _ in range(3) for path in paths]

    for response in responses:
        assert response.status_code == 200, (response.request.url, response.text)
        assert not has_rate_limit_headers(response)


# --- 3. one limit across processes ------------------------------------------------------------------------


def burst(senders: list[httpx.Client], send: Callable[[httpx.Client], httpx.Response]) -> list[int]:
    """``send`` through every client of ``senders`` at the same moment, one thread each; the status codes."""
    start = threading.Barrier(len(senders))

    def one(client: httpx.Client) -> int:
        start.wait()
        return send(client).status_code

    with ThreadPoolExecutor(max_workers=len(senders)) as pool:
        return list(pool.map(one, senders))


BURST_LIMIT = 80
"""The user-hour limit of the two processes: each receives this many requests at once, more than the 64
connections of its Redis pool."""
_STALL = (
    "\"local t = redis.call('TIME') local start = t[1] * 1000000 + t[2] "
    "repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start >= tonumber(ARGV[1]) return 1\""
)
"""A script that keeps Redis busy (every other client waits) for ARGV[1] microseconds."""


@pytest.fixture(scope="module")
def two_processes(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Two ``ragwatch serve`` processes sharing the test Redis and a data directory, limited to
    ``BURST_LIMIT`` chats per user and hour (every other window is huge, so no minute ends during a burst),
    with a client each that keeps ``BURST_LIMIT`` connections open.

    The Redis timeout is generous so that a busy test machine cannot make the limiter fail open (that has
    tests of its own).
    """
    data_dir = tmp_path_factory.mktemp("processes") / "data"
    data_dir.mkdir()
    with (
        serving_processes(
            2,
            data_dir,
            RAGWATCH_REDIS_URL=redis_server.url,
            RAGWATCH_REDIS_TIMEOUT_S="5",
            RAGWATCH_RATE_LIMIT_PER_HOUR=str(BURST_LIMIT),
            RAGWATCH_RATE_LIMIT_PER_MINUTE=str(HUGE),
            RAGWATCH_RATE_LIMIT_TENANT_PER_MINUTE=str(HUGE),
            RAGWATCH_RATE_LIMIT_TENANT_PER_HOUR=str(HUGE),
            RAGWATCH_JWT_SECRET=JWT_SECRET,
            RAGWATCH_LOG_LEVEL="WARNING",
            RAGWATCH_MAX_CONCURRENT_REQUESTS=str(2 * BURST_LIMIT),  # the limiter, not load shedding, decides
        ) as processes,
        ExitStack() as stack,
    ):
        pool = httpx.Limits(max_connections=BURST_LIMIT, max_keepalive_connections=BURST_LIMIT)
        first, second = (
            stack.enter_context(httpx.Client(base_url=running.url, limits=pool, timeout=30)) for running in processes
        )
        # Open every connection now, so that the chats of a burst really arrive together.
        assert burst([first, second] * BURST_LIMIT, lambda client: client.get("/health/live")) == [200] * (
            2 * BURST_LIMIT
        )
        yield first, second


def new_user_with_a_shared_kb(two_processes: tuple[httpx.Client, httpx.Client]) -> tuple[dict[str, str], str]:
    """The auth headers of a user of a new tenant, and a knowledge base of theirs both processes already see."""
    first, second = two_processes
    caller = auth(fresh_tenant(), "alice")
    kb_id = create_kb_as(first, caller)
    visible_by = time.monotonic() + 5  # through the other process, past its LanceDB read-consistency interval
    while second.get(f"/v1/knowledge-bases/{kb_id}", headers=caller).status_code != 200:
        assert time.monotonic() < visible_by, "the knowledge base never became visible through the other process"
        time.sleep(0.05)
    return caller, kb_id


def burst_of_chats(two_processes: tuple[httpx.Client, httpx.Client], caller: dict[str, str], kb_id: str) -> list[int]:
    """2 × ``BURST_LIMIT`` chats of ``caller`` at once, half through each process; their status codes."""
    return burst([*two_processes] * BURST_LIMIT, lambda client: chat(client, kb_id, caller))


def test_exactly_the_limit_of_a_concurrent_burst_passes_across_two_service_processes(
    redis_server: RedisServer, two_processes: tuple[httpx.Client, httpx.Client]
) -> None:
    """2 × limit chats at once, half through each process: exactly ``limit`` pass, the rest are refused, and
    so is the next chat through either process."""
    redis_server.command("FLUSHALL")
    caller, kb_id = new_user_with_a_shared_kb(two_processes)
    _hour_with_room()

    statuses = burst_of_chats(two_processes, caller, kb_id)
    after = [chat(client, kb_id, caller) for client in two_processes]

    assert Counter(statuses) == {200: BURST_LIMIT, 429: BURST_LIMIT}
    for response in after:
        assert_refused(response, "user-hour")


def test_a_burst_larger_than_the_redis_connection_pool_during_a_redis_stall_is_still_limited_exactly(
    redis_server: RedisServer, two_processes: tuple[httpx.Client, httpx.Client]
) -> None:
    """While Redis is busy for a second, each process holds more waiting requests than pool connections: they
    wait for a connection rather than fail open (which would let more than the limit through)."""
    redis_server.command("FLUSHALL")
    caller, kb_id = new_user_with_a_shared_kb(two_processes)
    _hour_with_room()

    def stall_redis() -> tuple[bytes, float]:
        return redis_server.command("EVAL", _STALL, "0", "1000000"), time.monotonic()

    with ThreadPoolExecutor(max_workers=1) as staller:
        stall = staller.submit(stall_redis)
        time.sleep(0.05)
        burst_started = time.monotonic()
        statuses = burst_of_chats(two_processes, caller, kb_id)
        reply, stall_ended = stall.result()

    assert reply == b":1\r\n"
    assert burst_started < stall_ended  # the chats arrived while Redis was busy
    assert Counter(statuses) == {200: BURST_LIMIT, 429: BURST_LIMIT}


# --- 4. Redis going away and coming back ------------------------------------------------------------------


def poll(
    probe: Callable[[], httpx.Response], until: Callable[[httpx.Response], bool], timeout_s: float = 10
) -> httpx.Response:
    """``probe()`` again and again until ``until`` holds of its response (within ``timeout_s``); that response."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = probe()
        if until(response) or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


def error_decisions(client: httpx.Client, action: str) -> float:
    """``rag_ratelimit_decisions_total{action, outcome="error"}`` as ``/metrics`` reports it."""
    response = client.get("/metrics")
    assert response.status_code == 200
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in response.text.splitlines()
        if line.startswith("rag_ratelimit_decisions_total{")
        and f'action="{action}"' in line
        and 'outcome="error"' in line
    )


def outage_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The error lines that report Redis going away (one per outage, not one per request)."""
    return [r.getMessage() for r in caplog.records if r.name == "ragwatch.redis" and r.levelno == logging.ERROR]


@contextmanager
def alice_after_redis_stopped(
    own_redis: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, **env: str
) -> Iterator[tuple[httpx.Client, str, httpx.Response]]:
    """A server on ``own_redis`` limiting to 2 chats a minute (plus ``env``), with limiter warnings captured:
    alice's client, a knowledge base of hers, and the chat she made just before ``own_redis`` was stopped."""
    settings = make_settings(
        tmp_path / "data", RAGWATCH_REDIS_URL=own_redis.url, RAGWATCH_RATE_LIMIT_PER_MINUTE="2", **env
    )
    with (
        caplog.at_level(logging.WARNING, logger="ragwatch.redis"),
        live_server(settings) as server,
        clients(server, ("acme", "alice")) as (alice,),
    ):
        kb_id = create_kb(alice, "handbook")
        _minute_with_room(6)
        before = chat(alice, kb_id)
        own_redis.stop()
        yield alice, kb_id, before


def test_while_redis_is_down_failing_open_lets_requests_through_uncounted_and_says_so_everywhere(
    own_redis: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Failure mode open (the default): chat and ingest answer without RateLimit headers, even past the limit;
    readiness is 200 ``degraded`` on redis; ``outcome="error"`` decisions are counted and one error line logged."""
    with alice_after_redis_stopped(own_redis, tmp_path, caplog) as (alice, kb_id, before):
        chats = [chat(alice, kb_id) for _ in range(4)]
        ingested = post_document(alice, kb_id)
        readiness = alice.get("/health/ready")
        chat_errors, ingest_errors = error_decisions(alice, "chat"), error_decisions(alice, "ingest")

    assert before.status_code == 200
    assert has_rate_limit_headers(before)
    for response in chats:
        assert response.status_code == 200, response.text
        assert not has_rate_limit_headers(response)
    assert ingested.status_code == 201, ingested.text
    assert not has_rate_limit_headers(ingested)
    assert readiness.status_code == 200
    assert readiness.json()["status"] == "degraded"
    assert readiness.json()["checks"]["redis"]["status"] == "degraded"
    assert readiness.json()["checks"]["lancedb"]["status"] == "ok"
    assert (chat_errors, ingest_errors) == (4, 1)
    assert len(outage_errors(caplog)) == 1
    assert "rate limiter is failing open" in outage_errors(caplog)[0]


def test_while_redis_is_down_failing_closed_refuses_limited_requests_with_a_503_problem(
    own_redis: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Failure mode closed: chat and ingest are 503 ``rate-limiter-unavailable`` (never 500); unlimited routes
    still answer; the errors are counted and logged as when failing open."""
    with alice_after_redis_stopped(own_redis, tmp_path, caplog, RAGWATCH_RATE_LIMIT_FAILURE_MODE="closed") as (
        alice,
        kb_id,
        before,
    ):
        chats = [chat(alice, kb_id) for _ in range(3)]
        ingested = post_document(alice, kb_id)
        unlimited = [alice.get(path) for path in ("/health/live", "/v1/knowledge-bases", documents_url(kb_id))]
        readiness = alice.get("/health/ready")
        chat_errors = error_decisions(alice, "chat")

    assert before.status_code == 200
    for response in [*chats, ingested]:
        assert_problem(response, 503, "rate-limiter-unavailable", detail=True)
        assert not has_rate_limit_headers(response)
    assert [response.status_code for response in unlimited] == [200, 200, 200]
    assert readiness.status_code == 200
    assert readiness.json()["status"] == "degraded"
    assert chat_errors == 3
    assert len(outage_errors(caplog)) == 1
    assert "rate limiter is failing closed" in outage_errors(caplog)[0]


@pytest.mark.parametrize("failure_mode", ["open", "closed"])
def test_when_redis_comes_back_on_the_same_port_limits_and_readiness_recover_without_a_restart(
    own_redis: RedisServer, tmp_path: Path, failure_mode: str
) -> None:
    """Stop Redis, fail more requests than the pool has connections, then start Redis again: within seconds
    readiness is ``ok`` and the (new, empty) counters enforce the limit again; no response is a 500."""
    settings = make_settings(
        tmp_path / "data",
        RAGWATCH_REDIS_URL=own_redis.url,
        RAGWATCH_RATE_LIMIT_PER_MINUTE="2",
        RAGWATCH_RATE_LIMIT_FAILURE_MODE=failure_mode,
    )
    seen: list[httpx.Response] = []
    with live_server(settings) as server, clients(server, ("acme", "alice")) as (alice,):
        alice.event_hooks["response"].append(seen.append)
        kb_id = create_kb(alice, "handbook")
        _minute_with_room(12)
        own_redis.stop()
        down = [chat(alice, kb_id) for _ in range(70)]  # more than the 64 connections of the Redis pool
        assert alice.get("/health/ready").json()["status"] == "degraded"

        own_redis.start()
        readiness = poll(lambda: alice.get("/health/ready"), lambda r: r.json()["status"] == "ok")
        counted = poll(lambda: chat(alice, kb_id), has_rate_limit_headers)
        rest = [chat(alice, kb_id) for _ in range(2)]

    assert {response.status_code for response in down} == {200 if failure_mode == "open" else 503}
    assert readiness.json()["status"] == "ok"
    assert readiness.json()["checks"]["redis"]["status"] == "ok"
    assert counted.status_code == 200, counted.text
    assert rate_limit(counted)[:2] == ("user-minute", 1)
    assert rest[0].status_code == 200
    assert rate_limit(rest[0])[:2] == ("user-minute", 0)
    assert_refused(rest[1], "user-minute")
    assert len(seen) >= 6
    assert {response.status_code for response in seen} <= {200, 201, 429, 503}


# --- 5. settings ------------------------------------------------------------------------------------------


def assert_one_line_naming(error: pytest.ExceptionInfo[SettingsError], variable: str) -> str:
    message = str(error.value)
    assert message.startswith(f"{variable}: ")
    assert "\n" not in message
    return message


@pytest.mark.parametrize("url", ["http://x", "localhost:6379", "redis:/localhost", "mongodb://localhost:27017"])
def test_a_redis_url_that_is_neither_redis_rediss_nor_memory_is_a_one_line_settings_error(
    tmp_path: Path, url: str
) -> None:
    with pytest.raises(SettingsError) as error:
        make_settings(tmp_path, RAGWATCH_REDIS_URL=url)

    message = assert_one_line_naming(error, "RAGWATCH_REDIS_URL")
    assert "redis://" in message
    assert "memory://" in message


@pytest.mark.parametrize("url", ["memory://", "redis://127.0.0.1:6379/0", "rediss://cache.internal:6380/1"])
def test_redis_memory_and_tls_redis_urls_are_accepted(tmp_path: Path, url: str) -> None:
    assert make_settings(tmp_path, RAGWATCH_REDIS_URL=url).redis.url == url


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "JSON is malformed"),
        ('["acme"]', "got `array`"),
        ('{"acme": {"per_minute": 0}}', ">= 1"),
        ('{"acme": {"per_minute": "lots"}}', "got `str`"),
        ('{"acme": {"per_minuet": 100}}', "per_minuet"),
    ],
    ids=["not-json", "not-an-object", "zero-limit", "not-a-number", "unknown-field"],
)
def test_a_bad_overrides_file_is_a_one_line_settings_error_naming_the_variable(
    tmp_path: Path, content: str, says: str
) -> None:
    overrides = tmp_path / "overrides.json"
    overrides.write_text(content)
    settings = make_settings(tmp_path, RAGWATCH_RATE_LIMIT_OVERRIDES_FILE=str(overrides))

    with pytest.raises(SettingsError) as direct:
        load_overrides(str(overrides))
    with pytest.raises(SettingsError) as at_start:
        create_app(settings)

    assert says in assert_one_line_naming(direct, "RAGWATCH_RATE_LIMIT_OVERRIDES_FILE")
    assert str(at_start.value) == str(direct.value)


def test_a_missing_overrides_file_is_a_one_line_settings_error_naming_the_variable_and_the_path(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nowhere.json"
    settings = make_settings(tmp_path, RAGWATCH_RATE_LIMIT_OVERRIDES_FILE=str(missing))

    with pytest.raises(SettingsError) as error:
        create_app(settings)

    assert str(missing) in assert_one_line_naming(error, "RAGWATCH_RATE_LIMIT_OVERRIDES_FILE")


def test_a_valid_overrides_file_gives_each_named_tenant_only_the_limits_it_names(tmp_path: Path) -> None:
    overrides = tmp_path / "overrides.json"
    overrides.write_text(json.dumps({"vip": {"per_minute": 120, "tenant_per_hour": 50_000}, "small": {}}))

    loaded = load_overrides(str(overrides))

    assert set(loaded) == {"vip", "small"}
    assert (loaded["vip"].per_minute, loaded["vip"].tenant_per_hour) == (120, 50_000)
    assert (loaded["vip"].per_hour, loaded["vip"].tenant_per_minute) == (None, None)
    assert load_overrides(None) == {}
