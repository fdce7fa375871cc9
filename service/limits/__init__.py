"""Rate limits per tenant and per user, on chat and on ingestion, per minute and per hour.

- :mod:`~service.limits.windows`: the windows a request is counted in, the decision and its headers (pure).
- :mod:`~service.limits.counters`: the atomic check-and-count, in Redis (one Lua script) or in this process.
- :mod:`~service.limits.overrides`: per-tenant limits from a file.
- :mod:`~service.limits.limiter`: :class:`RateLimiter`, which decides a request and reports it.
- :mod:`~service.limits.budgets`: :class:`TokenBudgets`, each tenant's LLM tokens per day.
"""

from service.limits.budgets import TokenBudgets
from service.limits.counters import Counters, MemoryCounters, RedisCounters
from service.limits.limiter import RateLimiter
from service.limits.overrides import Override, load_overrides
from service.limits.windows import Action, Decision, Window

__all__ = [
    "Action",
    "Counters",
    "Decision",
    "MemoryCounters",
    "Override",
    "RateLimiter",
    "RedisCounters",
    "TokenBudgets",
    "Window",
    "load_overrides",
]
