"""Whether Redis answers: the one health state of a process, and the guard every Redis call goes through.

The cache, the rate limiter and the activity publisher wrap each Redis call in :meth:`RedisHealth.guard`.
After a failure, guarded calls are not made at all (they raise :class:`RedisUnavailable` at once, so a Redis
outage costs requests no timeouts) until a background probe finds Redis answering again: the outage ends by
itself, with no restart. Each caller decides what an unavailable Redis means for it (a cache miss, the rate
limiter's failure mode, a quiet gauge).

A leaf module: it knows Redis's client and the telemetry instruments, nothing of the callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType

from redis.asyncio import Redis
from redis.exceptions import RedisError

from telemetry import Telemetry

__all__ = ["REDIS_ERRORS", "REDIS_OPERATIONS", "RedisGuard", "RedisHealth", "RedisUnavailable"]

logger = logging.getLogger("ragwatch.redis")
PROBE_INTERVAL_S = 0.5
REDIS_ERRORS = (RedisError, OSError, TimeoutError)
"""What a Redis call raises when Redis fails: refused, reset, timed out, or an error reply."""
REDIS_OPERATIONS = (
    "cache",
    "ratelimit",
    "active_tenants",
    "conversations",
    "idempotency",
    "answers",
    "probes",
    "budgets",
)
"""The ``operation`` label values of ``rag_redis_errors_total``: every guarded caller."""


class RedisUnavailable(Exception):
    """A guarded Redis call failed, or was not made because Redis is known to be down."""


class RedisGuard:
    """``with health.guard("cache"): await redis...``: counts and reports the call's outcome.

    Entering raises :class:`RedisUnavailable` when Redis is known to be down (counted as skipped); a Redis
    error inside becomes :class:`RedisUnavailable` (counted as failed, and the first one starts an outage);
    any other exception passes through untouched. Stateless, so one instance per operation serves every call.
    """

    __slots__ = ("_health", "_operation")

    def __init__(self, health: RedisHealth, operation: str) -> None:
        self._health = health
        self._operation = operation

    def __enter__(self) -> None:
        if not self._health.up:
            self._health.skipped(self._operation)
            raise RedisUnavailable(f"Redis is down: {self._operation} skipped")

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if exc is None:
            self._health.succeeded()
        elif isinstance(exc, REDIS_ERRORS):
            self._health.failed(self._operation, exc)
            raise RedisUnavailable(f"Redis failed during {self._operation}: {type(exc).__name__}") from exc


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
        self._guards = {operation: RedisGuard(self, operation) for operation in REDIS_OPERATIONS}
        if redis is not None:
            telemetry.instruments.dependencies.set("redis", True)
            for operation in REDIS_OPERATIONS:  # series from the start, so rate() and alerts see the first error
                telemetry.instruments.redis_errors.add(0, {"operation": operation})

    @property
    def up(self) -> bool:
        return self._up

    def guard(self, operation: str) -> RedisGuard:
        """The guard of ``operation`` (one of :data:`REDIS_OPERATIONS`)."""
        return self._guards[operation]

    def succeeded(self) -> None:
        if not self._up:
            self._recovered()

    def failed(self, operation: str, exc: BaseException) -> None:
        """Count the failure of ``operation``; the first one of an outage is logged and starts the probe."""
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
