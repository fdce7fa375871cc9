"""Single flight: identical computations arriving together in one process run once, and all share the result."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["FlightAbandoned", "SingleFlight"]

T = TypeVar("T")


class FlightAbandoned(Exception):
    """The caller leading a flight went away before its result; those waiting for it compute it themselves."""


class SingleFlight(Generic[T]):
    """At most one computation per key at a time in this process: callers asking for a key already in flight
    wait for its result instead of computing it again.

    :meth:`run` computes in a task of its own, so a caller that goes away (a client disconnects) neither
    cancels it for the others nor wastes it: it still completes, and its result is kept. A caller that must
    compute in its own task (a streamed answer) takes the key with :meth:`claim` and settles the flight itself;
    settling it with :class:`FlightAbandoned` sends the waiters to compute it anew.
    """

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Future[T]] = {}

    def in_flight(self, key: str) -> bool:
        return key in self._flights

    async def run(self, key: str, compute: Callable[[], Awaitable[T]]) -> T:
        while True:
            flight = self._flights.get(key)
            if flight is None:
                flight = asyncio.ensure_future(compute())
                self._track(key, flight)
            try:
                return await asyncio.shield(flight)
            except FlightAbandoned:
                continue

    def claim(self, key: str) -> asyncio.Future[T] | None:
        """A flight for the caller to settle with its result, or ``None`` when one is already in flight."""
        if key in self._flights:
            return None
        flight: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._track(key, flight)
        return flight

    def _track(self, key: str, flight: asyncio.Future[T]) -> None:
        self._flights[key] = flight
        flight.add_done_callback(lambda done: self._landed(key, done))

    def _landed(self, key: str, flight: asyncio.Future[T]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.cancelled():
            flight.exception()  # retrieved, so an error nobody waited for is not reported as never retrieved
