"""Keeping a failing LLM provider from taking the service down with it: a circuit breaker per provider and
operation, and retries drawn from a budget.

Written here rather than taken from a library (pybreaker, aiobreaker, purgatory) because none of them lets
exactly one trial call through a half-open circuit while other coroutines wait on it, tells how long an open
circuit stays open (the ``Retry-After`` of the 503), or bounds retries by a share of recent calls.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from service.errors import ProviderError, ProviderUnavailable

__all__ = ["CIRCUIT_OPEN", "CircuitBreaker", "ProviderGuard", "RetryBudget"]

T = TypeVar("T")
State = Literal["closed", "open", "half-open"]

CIRCUIT_OPEN = "circuit_open"
"""The ``error.type`` of a call not made because its circuit is open (a 503 ``llm-provider-unavailable``)."""

BUDGET_WINDOW_S = 10.0
BUDGET_FLOOR = 3
"""Retries always allowed per window, so a quiet service still retries a lone failed call."""
MAX_BACKOFF_S = 8.0
"""Longest wait before a retry, whatever the provider's ``Retry-After`` asks (longer: the call fails)."""


class CircuitBreaker:
    """Closed: calls go through, and ``failures`` consecutive failed calls open the circuit. Open: calls fail at
    once for ``cooldown_s``. Then half-open: one trial call goes through (the others still fail at once); its
    success closes the circuit, its failure opens it for another cool-down.

    ``on_change(open)`` is told every time the circuit opens (``True``) or closes (``False``).
    """

    def __init__(
        self,
        failures: int,
        cooldown_s: float,
        on_change: Callable[[bool], None] = lambda _: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failures
        self._cooldown_s = cooldown_s
        self._on_change = on_change
        self._clock = clock
        self.state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0

    def admit(self) -> None:
        """Let one call through, or raise the 503 :class:`ProviderUnavailable` with ``Retry-After``."""
        if self.state == "closed":
            return
        waited = self._clock() - self._opened_at
        if self.state == "open" and waited >= self._cooldown_s:
            self.state = "half-open"  # this call is the trial
            return
        # Open, or half-open with the trial still running: at least a second, the trial may still fail.
        remaining = max(1, math.ceil(self._cooldown_s - waited))
        paused = ProviderUnavailable(
            f"The LLM provider failed {self._threshold} calls in a row; calls are paused until it recovers.",
            headers={"Retry-After": str(remaining)},
        )
        paused.error_type = CIRCUIT_OPEN
        raise paused

    def succeeded(self) -> None:
        """An admitted call got an answer (any answer the provider is not at fault for)."""
        self._failures = 0
        if self.state != "closed":
            self.state = "closed"
            self._on_change(False)

    def failed(self) -> None:
        """An admitted call failed by the provider's fault."""
        if self.state == "half-open":
            self._open()
            return
        self._failures += 1
        if self.state == "closed" and self._failures >= self._threshold:
            self._open()

    def abandoned(self) -> None:
        """An admitted call ended without an outcome (cancelled): a trial leaves its place to the next caller."""
        if self.state == "half-open":
            self.state = "open"
            self._opened_at = self._clock() - self._cooldown_s

    def _open(self) -> None:
        was_open = self.state != "closed"
        self.state = "open"
        self._opened_at = self._clock()
        if not was_open:
            self._on_change(True)


class RetryBudget:
    """Retries may be at most ``ratio`` of the calls of the last 10 s, plus :data:`BUDGET_FLOOR`."""

    def __init__(self, ratio: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ratio = ratio
        self._clock = clock
        self._calls: deque[float] = deque()
        self._retries: deque[float] = deque()

    def called(self) -> None:
        """A first attempt was made (it earns ``ratio`` of a retry)."""
        self._calls.append(self._clock())

    def withdraw(self) -> bool:
        """Whether one more retry fits the budget; if it does, it is counted."""
        now = self._clock()
        for times in (self._calls, self._retries):
            while times and now - times[0] > BUDGET_WINDOW_S:
                times.popleft()
        if len(self._retries) >= BUDGET_FLOOR + self._ratio * len(self._calls):
            return False
        self._retries.append(now)
        return True


class ProviderGuard:
    """One provider operation's calls, each admitted by its :class:`CircuitBreaker`, failed ones retried up to
    ``max_retries`` times while the :class:`RetryBudget` allows, after an exponential backoff with jitter (or the
    provider's ``Retry-After``, when it asks for at most :data:`MAX_BACKOFF_S`).

    ``on_retry(outcome)`` is told of each retry made (``"retried"``) or refused by the budget (``"over_budget"``).
    """

    def __init__(
        self,
        breaker: CircuitBreaker,
        budget: RetryBudget,
        max_retries: int,
        on_retry: Callable[[str], None] = lambda _: None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.breaker = breaker
        self._budget = budget
        self._max_retries = max_retries
        self._on_retry = on_retry
        self._sleep = sleep

    async def call(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()`` until it succeeds or fails for good; it raises :class:`ProviderError` on failure."""
        self._budget.called()
        retries = 0
        while True:
            self.breaker.admit()
            try:
                result = await attempt()
            except ProviderError as exc:
                if not exc.transient:
                    self.breaker.succeeded()  # the provider answered: the request was at fault, not it
                    raise
                self.breaker.failed()
                if retries >= self._max_retries or self.breaker.state != "closed":
                    raise
                if not self._budget.withdraw():
                    self._on_retry("over_budget")
                    raise
                retries += 1
                wait = _backoff(retries, exc.headers.get("Retry-After"))
                if wait is None:
                    raise
                self._on_retry("retried")
                await self._sleep(wait)
            except BaseException:
                self.breaker.abandoned()
                raise
            else:
                self.breaker.succeeded()
                return result

    def failed_midway(self, exc: ProviderError) -> None:
        """A streamed answer broke after its call succeeded: a failure of the provider's, when transient."""
        if exc.transient:
            self.breaker.failed()


def _backoff(retry: int, retry_after: str | None) -> float | None:
    """Seconds before retry number ``retry``; ``None`` when the provider asks for longer than is worth waiting."""
    if retry_after is not None and retry_after.isdigit():
        asked = float(retry_after)
        return asked if asked <= MAX_BACKOFF_S else None
    return min(MAX_BACKOFF_S, 0.5 * 2.0 ** (retry - 1)) * random.uniform(0.75, 1.0)  # noqa: S311 (jitter, not a secret)
