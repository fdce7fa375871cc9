"""State shared by every replica: Redis, or an in-process stand-in for the embedded single-process default.

:class:`RedisHealth` is the one place that knows whether Redis answers. The cache and the rate limiter
report every failure to it; after one, they stop calling Redis (the cache is bypassed, the limiter follows
its failure mode) until a background probe finds Redis answering again, so a Redis outage costs requests
no timeouts and ends by itself, with no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from redis.asyncio import BlockingConnectionPool, Redis

from service.cache import CacheBackend, MemoryCacheBackend, RedisCacheBackend
from service.config import Settings
from service.limits import Counters, MemoryCounters, RedisCounters
from telemetry import Telemetry
from telemetry.redis import instrument_redis

__all__ = ["ActivityPublisher", "RedisHealth", "SharedState", "open_shared_state"]

logger = logging.getLogger("ragwatch.redis")
PROBE_INTERVAL_S = 0.5
ACTIVITY_INTERVAL_S = 5.0
ACTIVE_TENANTS_KEY = "rw:active-tenants"
ACTIVE_WINDOW_S = 300
REDIS_OPERATIONS = ("cache", "ratelimit", "active_tenants")


class RedisHealth:
    """Whether Redis answered its last command; logs and counts each failure, and probes until it is back.

    With ``redis=None`` (``memory://``) nothing can fail and Redis is always up.
    """

    def __init__(self, redis: Redis | None, telemetry: Telemetry, *, consequence: str = "") -> None:
        self._redis = redis
        self._telemetry = telemetry
        self._consequence = consequence
        self._up = True
        self._probe: asyncio.Task[None] | None = None
        if redis is not None:
            telemetry.instruments.dependencies.set("redis", True)
            for operation in REDIS_OPERATIONS:  # series from the start, so rate() and alerts see the first error
                telemetry.instruments.redis_errors.add(0, {"operation": operation})

    @property
    def up(self) -> bool:
        return self._up

    def succeeded(self) -> None:
        if not self._up:
            self._recovered()

    def failed(self, operation: str, exc: BaseException) -> None:
        """Count the failure of ``operation`` (``cache``, ``ratelimit``…); the first one of an outage is logged."""
        self._telemetry.instruments.redis_errors.add(1, {"operation": operation})
        if not self._up:
            return
        self._up = False
        self._telemetry.instruments.dependencies.set("redis", False)
        logger.error(
            "Redis is unavailable (%s during %s): %s until it answers again",
            type(exc).__name__,
            operation,
            self._consequence,
        )
        if self._redis is not None and (self._probe is None or self._probe.done()):
            self._probe = asyncio.get_running_loop().create_task(self._wait_for_redis(self._redis))

    def skipped(self, operation: str) -> None:
        """``operation`` did not call Redis because it is down: counted with the failures."""
        self._telemetry.instruments.redis_errors.add(1, {"operation": operation})

    async def _wait_for_redis(self, redis: Redis) -> None:
        while not self._up:
            await asyncio.sleep(PROBE_INTERVAL_S)
            # Still down (refused, timed out, loading): probe again after the interval.
            with contextlib.suppress(Exception):
                await redis.ping()
                # Connections pooled before the outage may be dead (a restarted Redis): drop them all, or
                # each would fail once more and start a new outage.
                await redis.connection_pool.disconnect()
                self._recovered()

    def _recovered(self) -> None:
        self._up = True
        self._telemetry.instruments.dependencies.set("redis", True)
        logger.warning("Redis answers again: caches and the shared rate limiter are back")

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe


class ActivityPublisher:
    """Publishes ``rag_active_tenants`` over every replica sharing Redis.

    Every few seconds each process adds the tenants it saw to one sorted set (scored by when they were seen),
    drops those older than five minutes and publishes how many remain. A batch per interval rather than a
    command per request keeps this off the hot path.
    """

    def __init__(self, redis: Redis, health: RedisHealth, telemetry: Telemetry) -> None:
        self._redis = redis
        self._health = health
        self._tenants = telemetry.instruments.active_tenants
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def publish_once(self) -> None:
        recent = self._tenants.recent()
        if not self._health.up:
            self._health.skipped("active_tenants")
            return
        horizon = time.time() - ACTIVE_WINDOW_S
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                if recent:
                    pipe.zadd(ACTIVE_TENANTS_KEY, recent, gt=True)
                pipe.zremrangebyscore(ACTIVE_TENANTS_KEY, "-inf", horizon)
                pipe.zcard(ACTIVE_TENANTS_KEY)
                replies = await pipe.execute()
        except Exception as exc:  # any Redis failure: the gauge goes quiet rather than wrong
            self._health.failed("active_tenants", exc)
            return
        self._health.succeeded()
        self._tenants.publish(int(replies[-1]))

    async def _run(self) -> None:
        while True:
            await self.publish_once()
            await asyncio.sleep(ACTIVITY_INTERVAL_S)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@dataclass
class SharedState:
    counters: Counters
    cache: CacheBackend
    health: RedisHealth
    redis: Redis | None
    """The pooled client when ``RAGWATCH_REDIS_URL`` names a Redis server; ``None`` for ``memory://``."""
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
    redis_settings = settings.redis
    if redis_settings.redis_url.startswith("memory://"):
        memory = MemoryCacheBackend(settings.cache.cache_memory_max_entries)
        counters = MemoryCounters(reader=memory.get_many)
        return SharedState(counters=counters, cache=memory, health=RedisHealth(None, telemetry), redis=None)
    password = redis_settings.redis_password.reveal() if redis_settings.redis_password else None
    # A blocking pool: a burst of more concurrent requests than connections waits (up to the timeout) for
    # one to be free, where the default pool raises MaxConnectionsError at once, and the limiter would fail
    # open (or closed) for every request beyond the 64th though Redis is healthy.
    pool = BlockingConnectionPool.from_url(
        redis_settings.redis_url,
        password=password,
        socket_timeout=redis_settings.redis_timeout_s,
        socket_connect_timeout=redis_settings.redis_timeout_s,
        health_check_interval=30,
        max_connections=64,
        timeout=redis_settings.redis_timeout_s,
    )
    client = Redis.from_pool(pool)
    instrument_redis(client, telemetry)
    health = RedisHealth(client, telemetry, consequence=_outage_consequence(settings))
    return SharedState(
        counters=RedisCounters(client),
        cache=RedisCacheBackend(client),
        health=health,
        redis=client,
        activity=ActivityPublisher(client, health, telemetry),
    )


def _outage_consequence(settings: Settings) -> str:
    """What a Redis outage means for requests, in words for the log line that reports it."""
    limits = settings.limits
    limiter = f"the rate limiter is failing {limits.rate_limit_failure_mode}" if limits.rate_limit_enabled else ""
    return "caches are bypassed" + (f" and {limiter}" if limiter else "")
