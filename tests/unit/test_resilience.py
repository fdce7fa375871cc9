"""The circuit breaker, the retry budget and the guard that combines them, on a clock the tests move."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from service.errors import ProviderError, ProviderTimeout, ProviderUnavailable
from service.providers.resilience import (
    BUDGET_FLOOR,
    BUDGET_WINDOW_S,
    CIRCUIT_OPEN,
    CircuitBreaker,
    ProviderGuard,
    RetryBudget,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Provider:
    """Answers each call by the next outcome of its script: a value, or an error raised."""

    def __init__(self, *script: object) -> None:
        self.script = list(script)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        outcome = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return str(outcome)


def down() -> ProviderError:
    return ProviderError("The LLM provider answered 500.", transient=True)


def refused() -> ProviderError:
    return ProviderError("The LLM provider answered 400.", transient=False)


def is_paused(outcome: object) -> bool:
    """A call failed at once by an open circuit, never made."""
    return isinstance(outcome, ProviderUnavailable) and outcome.error_type == CIRCUIT_OPEN


def breaker(clock: Clock, changes: list[bool] | None = None, failures: int = 3) -> CircuitBreaker:
    record = changes.append if changes is not None else (lambda _: None)
    return CircuitBreaker(failures, cooldown_s=30, on_change=record, clock=clock)


def guard(
    circuit: CircuitBreaker, clock: Clock, max_retries: int = 0, ratio: float = 0.2, retries: list[str] | None = None
) -> ProviderGuard:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    record = retries.append if retries is not None else (lambda _: None)
    return ProviderGuard(circuit, RetryBudget(ratio, clock=clock), max_retries, on_retry=record, sleep=sleep)


def run(call: Callable[[], Awaitable[str]]) -> str | BaseException:
    try:
        return asyncio.run(_awaited(call))
    except Exception as exc:
        return exc


async def _awaited(call: Callable[[], Awaitable[str]]) -> str:
    return await call()


# --- the circuit breaker --------------------------------------------------------------------------------


def test_the_circuit_opens_after_the_configured_consecutive_failures_and_then_fails_at_once() -> None:
    clock, changes = Clock(), []
    circuit = breaker(clock, changes, failures=3)
    provider = Provider(down())
    protected = guard(circuit, clock)

    outcomes = [run(lambda: protected.call(provider)) for _ in range(10)]

    assert provider.calls == 3
    assert all(is_paused(outcome) for outcome in outcomes[3:])
    assert circuit.state == "open"
    assert changes == [True]


def test_an_open_circuit_answers_503_unavailable_with_the_seconds_left_as_retry_after() -> None:
    clock = Clock()
    circuit = breaker(clock, failures=1)
    circuit.admit()
    circuit.failed()
    clock.now += 12.2

    with pytest.raises(ProviderUnavailable) as raised:
        circuit.admit()

    assert raised.value.status == 503
    assert raised.value.slug == "llm-provider-unavailable"
    assert raised.value.headers["Retry-After"] == "18"


def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    clock = Clock()
    circuit = breaker(clock, failures=3)
    for _ in range(5):
        circuit.admit()
        circuit.failed()
        circuit.admit()
        circuit.failed()
        circuit.admit()
        circuit.succeeded()

    assert circuit.state == "closed"


def test_after_the_cooldown_one_trial_call_goes_through_while_the_others_still_fail_at_once() -> None:
    clock = Clock()
    circuit = breaker(clock, failures=1)
    circuit.admit()
    circuit.failed()
    clock.now += 30

    circuit.admit()  # the trial
    with pytest.raises(ProviderUnavailable) as raised:
        circuit.admit()
    assert raised.value.error_type == CIRCUIT_OPEN
    assert circuit.state == "half-open"


def test_a_successful_trial_closes_the_circuit_and_a_failed_one_opens_it_for_another_cooldown() -> None:
    clock, changes = Clock(), []
    circuit = breaker(clock, changes, failures=1)
    circuit.admit()
    circuit.failed()
    clock.now += 30
    circuit.admit()
    circuit.failed()

    assert circuit.state == "open"
    clock.now += 29
    with pytest.raises(ProviderUnavailable) as raised:
        circuit.admit()
    assert raised.value.error_type == CIRCUIT_OPEN
    clock.now += 1
    circuit.admit()
    circuit.succeeded()

    assert circuit.state == "closed"
    assert changes == [True, False]


def test_a_trial_call_that_is_cancelled_leaves_its_place_to_the_next_caller() -> None:
    clock = Clock()
    circuit = breaker(clock, failures=1)
    circuit.admit()
    circuit.failed()
    clock.now += 30

    async def cancelled() -> str:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(guard(circuit, clock).call(cancelled))
    circuit.admit()  # the next trial

    assert circuit.state == "half-open"


def test_a_call_the_provider_refused_for_what_it_asked_never_opens_the_circuit() -> None:
    clock = Clock()
    circuit = breaker(clock, failures=2)
    provider = Provider(refused())
    protected = guard(circuit, clock, max_retries=3)

    outcomes = [run(lambda: protected.call(provider)) for _ in range(6)]

    assert provider.calls == 6  # answered, never retried, never paused
    assert all(isinstance(outcome, ProviderError) and not outcome.transient for outcome in outcomes)
    assert circuit.state == "closed"


def test_timeouts_unavailability_and_server_errors_are_transient_and_other_failures_are_not() -> None:
    assert ProviderTimeout("slow").transient
    assert ProviderUnavailable("gone").transient
    assert not ProviderError("unusable reply").transient


# --- retries and their budget ---------------------------------------------------------------------------


def test_a_failed_call_is_retried_and_its_success_returned() -> None:
    clock, retries = Clock(), []
    provider = Provider(down(), "answer")

    outcome = run(lambda: guard(breaker(clock), clock, max_retries=2, retries=retries).call(provider))

    assert outcome == "answer"
    assert provider.calls == 2
    assert retries == ["retried"]


def test_retries_stop_at_max_retries_and_raise_the_last_error() -> None:
    clock = Clock()
    provider = Provider(down())

    outcome = run(lambda: guard(breaker(clock, failures=100), clock, max_retries=2).call(provider))

    assert isinstance(outcome, ProviderError)
    assert provider.calls == 3


def test_retries_stop_as_soon_as_the_circuit_opens() -> None:
    clock = Clock()
    provider = Provider(down())

    outcome = run(lambda: guard(breaker(clock, failures=2), clock, max_retries=5).call(provider))

    assert isinstance(outcome, ProviderError)
    assert provider.calls == 2


def test_retries_are_bounded_by_a_share_of_recent_calls_so_they_never_multiply_an_outage() -> None:
    clock, retries = Clock(), []
    provider = Provider(down())
    protected = guard(breaker(clock, failures=10_000), clock, max_retries=3, ratio=0.2, retries=retries)

    for _ in range(100):
        run(lambda: protected.call(provider))

    assert retries.count("retried") == BUDGET_FLOOR + 20
    assert provider.calls == 100 + BUDGET_FLOOR + 20
    assert "over_budget" in retries


def test_the_budget_refills_as_its_window_moves_on() -> None:
    clock = Clock()
    budget = RetryBudget(0.0, clock=clock)
    assert [budget.withdraw() for _ in range(BUDGET_FLOOR + 1)] == [True] * BUDGET_FLOOR + [False]

    clock.now += BUDGET_WINDOW_S + 0.1

    assert budget.withdraw()


def test_a_retry_waits_what_the_provider_asks_and_a_longer_ask_is_not_waited_for() -> None:
    clock = Clock()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    protected = ProviderGuard(breaker(clock, failures=100), RetryBudget(1.0, clock=clock), 1, sleep=sleep)
    asked = ProviderError("429", headers={"Retry-After": "2"}, transient=True)
    too_long = ProviderError("429", headers={"Retry-After": "60"}, transient=True)

    assert run(lambda: protected.call(Provider(asked, "answer"))) == "answer"
    assert isinstance(run(lambda: protected.call(Provider(too_long, "answer"))), ProviderError)
    assert waits == [2.0]
