"""Every client test runs twice, with :class:`Client` and with :class:`AsyncClient`: a test awaits what a
method returns through :func:`resolve` (the sync client's result as it is), and lists an iteration through
:func:`collect`. The live server runs in its own thread, so the sync client may block the test's loop."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import TypeAlias, TypeVar

from ragwatch_client import AsyncClient, Client

T = TypeVar("T")
Api: TypeAlias = Client | AsyncClient
"""Either client; the ``api`` fixture is each in turn."""


async def resolve(result: Awaitable[T] | T) -> T:
    """What the method answered: awaited for the async client."""
    if inspect.isawaitable(result):
        return await result
    return result


async def collect(items: Iterator[T] | AsyncIterator[T], into: list[T] | None = None) -> list[T]:
    """Every item of a sync or async iteration, in order; appended to ``into`` as they come, so that a test
    sees those that came before an exception."""
    collected = [] if into is None else into
    if isinstance(items, AsyncIterator):
        async for item in items:
            collected.append(item)
    else:
        for item in items:
            collected.append(item)
    return collected
