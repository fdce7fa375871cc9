"""The rate limiter: per tenant and per user, on chat and on ingestion, per minute and per hour.

Written here rather than taken from the ``limits`` library because that spends a command per limit and
window, while a request here must be decided in one round trip (see :mod:`service.limits.counters`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from service.config import RateLimitSettings
from service.errors import RateLimited, RateLimiterUnavailable
from service.limits.counters import Counters
from service.limits.overrides import Override
from service.limits.windows import Action, Decision, Period, Scope, Window, decision_from_reply, windows_for
from service.shared.health import RedisHealth, RedisUnavailable
from telemetry import Telemetry, stage

__all__ = ["RateLimiter"]

_NO_OVERRIDE = Override()


class RateLimiter:
    def __init__(
        self,
        counters: Counters,
        settings: RateLimitSettings,
        overrides: Mapping[str, Override],
        telemetry: Telemetry,
        health: RedisHealth,
    ) -> None:
        self._counters = counters
        self._guard = health.guard("ratelimit")
        self._settings = settings
        self._overrides = overrides
        self._telemetry = telemetry
        decisions = telemetry.instruments.ratelimit_decisions
        for action in ("chat", "ingest", "search"):  # every series from the first scrape
            for outcome in ("allowed", "refused", "error"):
                decisions.add(0, {"action": action, "outcome": outcome})

    def limits(self, tenant_id: str) -> dict[tuple[Scope, Period], int]:
        """The tenant's limits: its override where it has one, else the settings'."""
        settings, override = self._settings, self._overrides.get(tenant_id, _NO_OVERRIDE)
        return {
            ("tenant", "minute"): override.tenant_per_minute or settings.tenant_per_minute,
            ("tenant", "hour"): override.tenant_per_hour or settings.tenant_per_hour,
            ("user", "minute"): override.per_minute or settings.per_minute,
            ("user", "hour"): override.per_hour or settings.per_hour,
        }

    async def check(self, tenant_id: str, user_id: str, action: Action, read: Sequence[str] = ()) -> Decision:
        """Count the request or refuse it with :class:`RateLimited` (429, ``Retry-After``); when the counters
        cannot be reached, let it through uncounted or refuse it with :class:`RateLimiterUnavailable` (503), as
        the failure mode says. Every decision, failures included, is counted in ``rag.ratelimit.decisions``.

        ``read``: keys whose values the request needs next (its cache lookup), read in the same round trip
        and returned in :attr:`Decision.read`."""
        now = time.time()
        windows = windows_for(self.limits(tenant_id), tenant_id, user_id, action, now)
        failure: RedisUnavailable | None = None
        with stage(self._telemetry, "rate_limit", **{"rag.ratelimit.action": action}) as span:
            try:
                with self._guard:
                    reply, values = await self._counters.check_and_count(
                        [w.key for w in windows], [w.limit for w in windows], [w.seconds + 5 for w in windows], read
                    )
            except RedisUnavailable as exc:
                failure, decision = exc, self._on_failure(windows, now)
            else:
                decision = decision_from_reply(reply, windows, now, values if read else None)
            span.set_attribute("rag.ratelimit.outcome", decision.outcome)
            self._telemetry.instruments.ratelimit_decisions.add(1, {"action": action, "outcome": decision.outcome})
            if failure is not None and not decision.allowed:
                # Failing closed: counted as an error above (the operator's signal), then refused with 503.
                raise RateLimiterUnavailable("The rate limiter cannot decide; try again shortly.") from failure
        if not decision.allowed:
            raise _refusal(decision)
        return decision

    def _on_failure(self, windows: Sequence[Window], now: float) -> Decision:
        """Redis failed or is known to be down (its health logs that once): the failure mode decides."""
        allowed = self._settings.failure_mode == "open"
        return Decision(allowed=allowed, outcome="error", windows=windows, counts=[], now=now)


def _refusal(decision: Decision) -> RateLimited:
    window = decision.full_window()
    headers = {**decision.headers(), "Retry-After": str(decision.retry_after())}
    return RateLimited(f"The {window.name.replace('-', ' per ')} limit of {window.limit} is reached.", headers=headers)
