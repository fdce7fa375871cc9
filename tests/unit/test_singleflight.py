"""Single flight: identical computations arriving together run once."""

from __future__ import annotations

import asyncio

import pytest

from service.singleflight import FlightAbandoned, SingleFlight


async def test_concurrent_callers_of_one_key_share_one_computation() -> None:
    flights: SingleFlight[str] = SingleFlight()
    calls = 0
    release = asyncio.Event()

    async def compute() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "answer"

    callers = [asyncio.ensure_future(flights.run("k", compute)) for _ in range(5)]
    await asyncio.sleep(0)
    assert flights.in_flight("k")
    release.set()

    assert await asyncio.gather(*callers) == ["answer"] * 5
    assert calls == 1
    assert not flights.in_flight("k")


async def test_different_keys_compute_apart() -> None:
    flights: SingleFlight[str] = SingleFlight()

    async def compute(value: str) -> str:
        await asyncio.sleep(0)
        return value

    results = await asyncio.gather(flights.run("a", lambda: compute("a")), flights.run("b", lambda: compute("b")))

    assert results == ["a", "b"]


async def test_a_caller_that_goes_away_neither_cancels_nor_wastes_the_computation() -> None:
    flights: SingleFlight[str] = SingleFlight()
    finished = asyncio.Event()

    async def compute() -> str:
        await asyncio.sleep(0.01)
        finished.set()
        return "kept"

    leader = asyncio.ensure_future(flights.run("k", compute))
    await asyncio.sleep(0)
    follower = asyncio.ensure_future(flights.run("k", compute))
    leader.cancel()

    assert await follower == "kept"
    assert finished.is_set()


async def test_an_error_reaches_every_waiter() -> None:
    flights: SingleFlight[str] = SingleFlight()

    async def compute() -> str:
        await asyncio.sleep(0)
        raise ValueError("provider down")

    outcomes = await asyncio.gather(flights.run("k", compute), flights.run("k", compute), return_exceptions=True)

    assert [type(outcome) for outcome in outcomes] == [ValueError, ValueError]
    assert not flights.in_flight("k")


async def test_a_claimed_flight_is_settled_by_its_caller_and_shared_with_waiters() -> None:
    flights: SingleFlight[str] = SingleFlight()
    flight = flights.claim("k")
    assert flight is not None
    assert flights.claim("k") is None  # one claim per key at a time

    async def never() -> str:
        raise AssertionError("a waiter computed while the flight was in progress")

    waiter = asyncio.ensure_future(flights.run("k", never))
    await asyncio.sleep(0)
    flight.set_result("streamed")

    assert await waiter == "streamed"


async def test_an_abandoned_flight_sends_its_waiters_to_compute_it_themselves() -> None:
    flights: SingleFlight[str] = SingleFlight()
    flight = flights.claim("k")
    assert flight is not None

    async def compute() -> str:
        return "recomputed"

    waiter = asyncio.ensure_future(flights.run("k", compute))
    await asyncio.sleep(0)
    flight.set_exception(FlightAbandoned())

    assert await waiter == "recomputed"


async def test_an_error_nobody_waited_for_is_not_reported_as_never_retrieved() -> None:
    flights: SingleFlight[str] = SingleFlight()
    flight = flights.claim("k")
    assert flight is not None

    flight.set_exception(RuntimeError("unobserved"))
    await asyncio.sleep(0)

    assert not flights.in_flight("k")
    with pytest.raises(RuntimeError):
        flight.result()
