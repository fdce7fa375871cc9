"""Rate-limit windows, decisions and their headers, and the in-process counters."""

from __future__ import annotations

import time

import pytest

from service.config import RateLimitSettings
from service.errors import RateLimited
from service.limits import MemoryCounters, Override, RateLimiter
from service.limits.windows import decision_from_reply, windows_for
from service.shared.health import RedisHealth
from telemetry import disabled_telemetry

LIMITS = {("tenant", "minute"): 600, ("tenant", "hour"): 10_000, ("user", "minute"): 60, ("user", "hour"): 1000}
NOW = 1_800_000_030.0  # 30 s into a minute, 30 s into an hour


def make_limiter(overrides: dict[str, Override] | None = None, **settings: int) -> RateLimiter:
    telemetry = disabled_telemetry()
    return RateLimiter(
        MemoryCounters(),
        RateLimitSettings(**settings),  # type: ignore[arg-type]
        overrides or {},
        telemetry,
        RedisHealth(None, telemetry),
    )


# --- windows ------------------------------------------------------------------------------------------------


def test_each_request_is_counted_in_four_fixed_windows() -> None:
    windows = windows_for(LIMITS, "acme", "alice", "chat", NOW)

    assert [(w.name, w.seconds, w.limit) for w in windows] == [
        ("tenant-minute", 60, 600),
        ("tenant-hour", 3600, 10_000),
        ("user-minute", 60, 60),
        ("user-hour", 3600, 1000),
    ]
    assert windows[0].key == f"rw:rl:{{acme}}:chat:t:60:{int(NOW) // 60}"


def test_window_keys_hash_the_user_and_keep_the_tenant_as_the_cluster_hash_tag() -> None:
    keys = [w.key for w in windows_for(LIMITS, "acme", "auth0|alice@example.com", "ingest", NOW)]

    assert all(key.startswith("rw:rl:{acme}:ingest:") for key in keys)
    assert not any("alice" in key for key in keys)


def test_the_next_window_has_another_key() -> None:
    now = windows_for(LIMITS, "acme", "alice", "chat", NOW)
    minute_later = windows_for(LIMITS, "acme", "alice", "chat", NOW + 60)

    assert now[0].key != minute_later[0].key  # tenant-minute
    assert now[1].key == minute_later[1].key  # tenant-hour


# --- decisions and headers -------------------------------------------------------------------------------------


def test_an_allowed_request_announces_every_policy_and_the_window_closest_to_full() -> None:
    windows = windows_for(LIMITS, "acme", "alice", "chat", NOW)

    decision = decision_from_reply([1, 10, 10, 58, 58], windows, NOW, None)

    assert decision.allowed
    assert decision.headers() == {
        "RateLimit-Policy": '"tenant-minute";q=600;w=60, "tenant-hour";q=10000;w=3600, '
        '"user-minute";q=60;w=60, "user-hour";q=1000;w=3600',
        "RateLimit": '"user-minute";r=2;t=30',
    }


def test_a_refused_request_names_the_full_window_and_when_it_starts_again() -> None:
    windows = windows_for(LIMITS, "acme", "alice", "chat", NOW)

    decision = decision_from_reply([0, 3, 60], windows, NOW, None)

    assert not decision.allowed
    assert decision.full_window().name == "user-minute"
    assert decision.retry_after() == 30


def test_a_decision_without_counts_has_no_headers() -> None:
    decision = decision_from_reply([1], [], NOW, None)

    assert decision.headers() == {}


# --- the in-process counters -------------------------------------------------------------------------------------


def test_counters_count_until_a_window_is_full_and_refusals_are_not_counted() -> None:
    counters = MemoryCounters()
    keys, limits, ttls = ["m", "h"], [2, 10], [65, 3605]

    assert counters.count(keys, limits, ttls) == [1, 1, 1]
    assert counters.count(keys, limits, ttls) == [1, 2, 2]
    assert counters.count(keys, limits, ttls) == [0, 1, 2]
    assert counters.count(["m2", "h"], limits, ttls) == [1, 1, 3]  # the hour saw only the counted ones


def test_a_window_starts_again_once_its_counter_expires() -> None:
    counters = MemoryCounters()
    counters.count(["m"], [1], [0])

    time.sleep(0.001)

    assert counters.count(["m"], [1], [60]) == [1, 1]


# --- the limiter ----------------------------------------------------------------------------------------------------


async def test_the_limiter_refuses_with_429_and_retry_after_once_a_user_limit_is_full() -> None:
    limiter = make_limiter(per_minute=2)
    for _ in range(2):
        await limiter.check("acme", "alice", "chat")

    with pytest.raises(RateLimited) as refused:
        await limiter.check("acme", "alice", "chat")

    assert refused.value.status == 429
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 60
    await limiter.check("acme", "bob", "chat")  # another user's window
    await limiter.check("acme", "alice", "ingest")  # another action's window


async def test_a_tenant_override_replaces_only_the_limits_it_names() -> None:
    limiter = make_limiter({"big": Override(per_minute=500)}, per_minute=2)

    assert limiter.limits("big")[("user", "minute")] == 500
    assert limiter.limits("big")[("user", "hour")] == 1000
    assert limiter.limits("small")[("user", "minute")] == 2
