"""State shared by every replica: Redis, or an in-process stand-in for the embedded single-process default."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import BlockingConnectionPool, Redis

from service.config import RedisSettings
from service.limits import Counters, MemoryCounters, RedisCounters
from telemetry import Telemetry
from telemetry.redis import instrument_redis

__all__ = ["SharedState", "open_shared_state"]


@dataclass
class SharedState:
    counters: Counters
    redis: Redis | None
    """The pooled client when ``RAGWATCH_REDIS_URL`` names a Redis server; ``None`` for ``memory://``."""

    async def ping(self) -> None:
        if self.redis is not None:
            await self.redis.ping()

    async def aclose(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()


def open_shared_state(settings: RedisSettings, telemetry: Telemetry) -> SharedState:
    if settings.redis_url.startswith("memory://"):
        return SharedState(counters=MemoryCounters(), redis=None)
    password = settings.redis_password.reveal() if settings.redis_password else None
    # A blocking pool: a burst of more concurrent requests than connections waits (up to the timeout) for
    # one to be free, where the default pool raises MaxConnectionsError at once, and the limiter would fail
    # open (or closed) for every request beyond the 64th though Redis is healthy.
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        password=password,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        health_check_interval=30,
        max_connections=64,
        timeout=settings.redis_timeout_s,
    )
    client = Redis.from_pool(pool)
    instrument_redis(client, telemetry)
    return SharedState(counters=RedisCounters(client), redis=client)
