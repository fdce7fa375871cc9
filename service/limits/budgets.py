"""Daily LLM token budgets per tenant: checked before a call leaves for the provider, counted after it.

A tenant's tokens of the current UTC day (input and output, chat and embeddings, of the calls to an
OpenAI-compatible provider; the offline default costs nothing and is not counted) are one counter, in Redis
for every replica (``INCRBY``, atomic) or in this process for ``memory://``. A call is refused with 429
``budget-exceeded`` once the day's count has reached the budget; calls already in flight when it is reached
still count, so a day may end a few calls over.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from redis.asyncio import Redis

from service.config import RateLimitSettings
from service.errors import BudgetExceeded, RateLimiterUnavailable
from service.limits.overrides import Override
from service.shared.health import RedisHealth, RedisUnavailable
from telemetry import Telemetry

__all__ = ["MemoryLedger", "RedisLedger", "TokenBudgets", "TokenLedger"]

logger = logging.getLogger("ragwatch.limits")
DAY_S = 86_400
KEY_TTL_S = 2 * DAY_S
"""A day's counter outlives its day, so a replica with a slow clock still finds it."""


class TokenLedger(Protocol):
    async def used(self, key: str) -> int:
        """Tokens counted under ``key`` (0 when none)."""
        ...

    async def spend(self, key: str, tokens: int) -> int:
        """Add ``tokens`` under ``key`` and return the new total."""
        ...


class RedisLedger:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def used(self, key: str) -> int:
        value = await self._redis.get(key)
        return int(value) if value is not None else 0

    async def spend(self, key: str, tokens: int) -> int:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incrby(key, tokens)
            pipe.expire(key, KEY_TTL_S)
            total, _ = await pipe.execute()
        return int(total)


class MemoryLedger:
    """One process's counters; day keys of past days are dropped as new days begin."""

    def __init__(self) -> None:
        self._totals: dict[str, int] = {}

    async def used(self, key: str) -> int:
        return self._totals.get(key, 0)

    async def spend(self, key: str, tokens: int) -> int:
        if key not in self._totals and len(self._totals) > 10_000:
            # Many tenants over many days: the counts of days other than this key's go, today's stay.
            day = key.split(":", 2)[1]
            self._totals = {kept: total for kept, total in self._totals.items() if kept.split(":", 2)[1] == day}
        self._totals[key] = total = self._totals.get(key, 0) + tokens
        return total


class TokenBudgets:
    """Each tenant's budget (its override, else ``RAGWATCH_TENANT_TOKEN_BUDGET_PER_DAY``; none: unlimited)."""

    def __init__(
        self,
        ledger: TokenLedger,
        settings: RateLimitSettings,
        overrides: Mapping[str, Override],
        telemetry: Telemetry,
        health: RedisHealth,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ledger = ledger
        self._default = settings.token_budget_per_day
        self._fail_open = settings.failure_mode == "open"
        self._overrides = overrides
        self._telemetry = telemetry
        self._guard = health.guard("budgets")
        self._clock = clock

    def budget(self, tenant_id: str) -> int | None:
        override = self._overrides.get(tenant_id)
        if override is not None and override.token_budget_per_day is not None:
            return override.token_budget_per_day
        return self._default

    async def check(self, tenant_id: str) -> None:
        """Refuse with :class:`BudgetExceeded` (429, ``Retry-After`` until 00:00 UTC) a tenant whose day's
        tokens have reached its budget. When Redis cannot tell, the rate limiter's failure mode decides."""
        budget = self.budget(tenant_id)
        if budget is None:
            return
        day, key = self._day_key(tenant_id)
        try:
            with self._guard:
                used = await self._ledger.used(key)
        except RedisUnavailable as exc:
            if self._fail_open:
                return
            raise RateLimiterUnavailable("The token budget cannot be checked; try again shortly.") from exc
        self._report(tenant_id, day, used, budget)
        if used >= budget:
            raise BudgetExceeded(
                f"The tenant's budget of {budget} LLM tokens per day is used up ({used} used); it renews at 00:00 UTC.",
                headers={"Retry-After": str(self._until_tomorrow())},
            )

    async def spend(self, tenant_id: str, tokens: int) -> None:
        """Count a finished call's tokens against the tenant's day (nothing for a tenant without budget)."""
        budget = self.budget(tenant_id)
        if budget is None or tokens <= 0:
            return
        day, key = self._day_key(tenant_id)
        try:
            with self._guard:
                used = await self._ledger.spend(key, tokens)
        except RedisUnavailable:
            logger.debug("tokens of tenant %s not counted: Redis is unavailable", tenant_id)
            return
        self._report(tenant_id, day, used, budget)

    def _day_key(self, tenant_id: str) -> tuple[int, str]:
        day = int(self._clock() // DAY_S)
        return day, f"budget:{day}:{tenant_id}"

    def _until_tomorrow(self) -> int:
        now = self._clock()
        return max(1, math.ceil((math.floor(now / DAY_S) + 1) * DAY_S - now))

    def _report(self, tenant_id: str, day: int, used: int, budget: int) -> None:
        instruments = self._telemetry.instruments
        instruments.token_budgets.set(instruments.tenant_label(tenant_id), day, used, budget)
