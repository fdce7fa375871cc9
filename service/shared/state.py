"""State shared by every replica: Redis, or an in-process stand-in for the embedded single-process default."""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.asyncio import BlockingConnectionPool, Redis

from service.cache import CacheBackend, MemoryCacheBackend, RedisCacheBackend
from service.config import Settings
from service.limits import Counters, MemoryCounters, RedisCounters
from service.limits.budgets import MemoryLedger, RedisLedger, TokenLedger
from service.shared.activity import ActivityPublisher
from service.shared.health import RedisHealth
from service.shared.records import MemoryRecords, Records, RedisRecords
from telemetry import Telemetry
from telemetry.redis import instrument_redis

__all__ = ["SharedState", "open_shared_state"]


@dataclass
class SharedState:
    counters: Counters
    cache: CacheBackend
    health: RedisHealth
    redis: Redis | None
    """The pooled client when ``RAGWATCH_REDIS_URL`` names a Redis server; ``None`` for ``memory://``."""
    records: Records
    """Conversations, idempotency keys, probe results and the probe lease."""
    answers: Records
    """Which answer each trace is (for feedback): many small entries; with ``memory://``, a store of their own,
    so a busy process never pushes conversations or idempotency keys out."""
    ledger: TokenLedger = field(default_factory=MemoryLedger)
    """Each tenant's LLM tokens of the day, for the token budgets."""
    activity: ActivityPublisher | None = None

    async def ping(self) -> None:
        if self.redis is not None:
            await self.redis.ping()

    def start(self) -> None:
        if self.activity is not None:
            self.activity.start()

    async def aclose(self) -> None:
        if self.activity is not None:
            await self.activity.aclose()
        await self.health.aclose()
        if self.redis is not None:
            await self.redis.aclose()


def open_shared_state(settings: Settings, telemetry: Telemetry) -> SharedState:
    """The backends ``RAGWATCH_REDIS_URL`` names; no connection is made until the first command."""
    if settings.redis.url.startswith("memory://"):
        memory = MemoryCacheBackend(settings.cache.memory_max_entries)
        counters = MemoryCounters(reader=memory.get_many)
        records, answers = MemoryRecords(settings.cache.memory_max_entries), MemoryRecords(100_000)
        health = RedisHealth(None, telemetry)
        return SharedState(counters=counters, cache=memory, health=health, redis=None, records=records, answers=answers)
    password = settings.redis.password.reveal() if settings.redis.password else None
    timeout_s = settings.redis.timeout_s
    # A blocking pool: a burst of more concurrent requests than connections waits (up to the timeout) for
    # one to be free, where the default pool raises MaxConnectionsError at once, and the limiter would fail
    # open (or closed) for every request beyond the 64th though Redis is healthy.
    pool = BlockingConnectionPool.from_url(
        settings.redis.url,
        password=password,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=30,
        max_connections=64,
        timeout=timeout_s,
    )
    client = Redis.from_pool(pool)
    instrument_redis(client, telemetry)
    health = RedisHealth(client, telemetry, consequence=_outage_consequence(settings))
    return SharedState(
        counters=RedisCounters(client),
        cache=RedisCacheBackend(client),
        health=health,
        redis=client,
        records=RedisRecords(client, health),
        answers=RedisRecords(client, health),
        ledger=RedisLedger(client),
        activity=ActivityPublisher(client, health, telemetry),
    )


def _outage_consequence(settings: Settings) -> str:
    """What a Redis outage means for requests, in words for the log line that reports it."""
    limits = settings.limits
    limiter = f"the rate limiter is failing {limits.failure_mode}" if limits.enabled else ""
    return "caches are bypassed" + (f" and {limiter}" if limiter else "")
