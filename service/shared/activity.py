"""``rag_active_tenants`` over every replica sharing Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from redis.asyncio import Redis

from service.shared.health import RedisHealth, RedisUnavailable
from telemetry import Telemetry

__all__ = ["ACTIVE_TENANTS_KEY", "ActivityPublisher"]

logger = logging.getLogger("ragwatch.redis")
ACTIVITY_INTERVAL_S = 5.0
ACTIVE_TENANTS_KEY = "rw:active-tenants"
ACTIVE_WINDOW_S = 300


class ActivityPublisher:
    """Publishes ``rag_active_tenants`` over every replica sharing Redis.

    Every few seconds each process adds the tenants it saw to one sorted set (scored by when they were seen),
    drops those older than five minutes and publishes how many remain. A batch per interval rather than a
    command per request keeps this off the hot path. The set expires five minutes after the last process
    wrote to it, like every other key ragwatch writes.
    """

    def __init__(self, redis: Redis, health: RedisHealth, telemetry: Telemetry) -> None:
        self._redis = redis
        self._guard = health.guard("active_tenants")
        self._tenants = telemetry.instruments.active_tenants
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def publish_once(self) -> None:
        recent = self._tenants.recent()
        horizon = time.time() - ACTIVE_WINDOW_S
        try:
            with self._guard:
                async with self._redis.pipeline(transaction=False) as pipe:
                    if recent:
                        pipe.zadd(ACTIVE_TENANTS_KEY, recent, gt=True)
                    pipe.zremrangebyscore(ACTIVE_TENANTS_KEY, "-inf", horizon)
                    pipe.expire(ACTIVE_TENANTS_KEY, ACTIVE_WINDOW_S)
                    pipe.zcard(ACTIVE_TENANTS_KEY)
                    replies = await pipe.execute()
        except RedisUnavailable:  # the gauge goes quiet rather than wrong
            return
        self._tenants.publish(int(replies[-1]))

    async def _run(self) -> None:
        while True:
            try:
                await self.publish_once()
            except Exception:  # not Redis's failure (the guard handles those): keep publishing regardless
                logger.exception("publishing the active tenants failed")
            await asyncio.sleep(ACTIVITY_INTERVAL_S)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
