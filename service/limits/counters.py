"""Where rate-limit counters live, and the one atomic decision made where they live.

In Redis one Lua script checks every window of a request (tenant and user, minute and hour) and counts the
request in all of them only if none is full, so any number of processes sharing Redis enforce one global limit
exactly; :class:`MemoryCounters` does the same in one process for ``memory://``. The script also reads the keys
the request needs next (its answer-cache entry), so a cached chat costs one command in one round trip.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeGuard

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from telemetry.redis import redis_call_in_current_span

__all__ = ["CHECK_AND_COUNT", "Counters", "MemoryCounters", "RedisCounters"]

# KEYS: one counter per window, then the keys to read; ARGV: the number of counters, their limits, then their
# lifetimes in seconds. Returns {{1, count1, count2, ...}, values} when the request is counted (values: the read
# keys' values, nil where absent), {{0, i, count_i}, {}} when window i is full.
CHECK_AND_COUNT = """
local n = tonumber(ARGV[1])
for i = 1, n do
  local count = tonumber(redis.call('GET', KEYS[i]) or '0')
  if count >= tonumber(ARGV[1 + i]) then
    return {{0, i, count}, {}}
  end
end
local counts = {1}
for i = 1, n do
  local count = redis.call('INCR', KEYS[i])
  if count == 1 then
    redis.call('EXPIRE', KEYS[i], ARGV[1 + n + i])
  end
  counts[i + 1] = count
end
local values = {}
if #KEYS > n then
  values = redis.call('MGET', unpack(KEYS, n + 1))
end
return {counts, values}
"""


class Counters(Protocol):
    async def check_and_count(
        self, keys: Sequence[str], limits: Sequence[int], ttls: Sequence[int], read: Sequence[str] = ()
    ) -> tuple[list[int], list[bytes | None]]:
        """Count one request in every window if none is full: the script's reply (see ``CHECK_AND_COUNT``);
        with it, the values of the ``read`` keys (what the request will look up next, in the same round trip)."""
        ...


class RedisCounters:
    """The script decides the request and reads its keys: one command, one round trip to Redis.

    ``EVALSHA`` is sent directly (the script is loaded once, and again if Redis lost it): redis-py's ``Script``
    would check that the script exists with an extra round trip on every request. One command rather than a
    pipeline of the script and an ``MGET``: a pipeline costs more in the client than the command it saves.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._sha = hashlib.sha1(CHECK_AND_COUNT.encode()).hexdigest()  # noqa: S324  # Redis names scripts by SHA-1

    async def check_and_count(
        self, keys: Sequence[str], limits: Sequence[int], ttls: Sequence[int], read: Sequence[str] = ()
    ) -> tuple[list[int], list[bytes | None]]:
        script_keys = [*keys, *read]
        script_args = [len(keys), *limits, *ttls]
        with redis_call_in_current_span("EVALSHA"):
            try:
                reply = await self._evalsha(script_keys, script_args)
            except NoScriptError:
                await self._redis.script_load(CHECK_AND_COUNT)
                reply = await self._evalsha(script_keys, script_args)
        if not _is_counted_reply(reply, len(read)):
            raise ResponseError("the rate-limit script's reply is not what it returns")
        counts, values = reply
        return counts, values

    async def _evalsha(self, keys: list[str], args: list[int]) -> object:
        reply: object = await self._redis.evalsha(self._sha, len(keys), *keys, *args)
        return reply


def _is_counted_reply(reply: object, reads: int) -> TypeGuard[list[list[Any]]]:
    """``{counts, values}`` as the script returns it: integers, then ``reads`` values (none when refused)."""
    if not isinstance(reply, list) or len(reply) != 2:
        return False
    counts, values = reply
    return (
        isinstance(counts, list)
        and bool(counts)
        and all(isinstance(value, int) for value in counts)
        and isinstance(values, list)
        and len(values) == (reads if counts[0] == 1 else 0)
        and all(value is None or isinstance(value, bytes) for value in values)
    )


class MemoryCounters:
    """The same decision for a single process; no ``await`` inside, so it is atomic on the event loop.

    ``reader`` reads the ``read`` keys (from the in-process cache) after the decision.
    """

    def __init__(self, reader: Callable[[Sequence[str]], Awaitable[list[bytes | None]]] | None = None) -> None:
        self._counts: dict[str, tuple[int, float]] = {}
        self._reader = reader

    async def check_and_count(
        self, keys: Sequence[str], limits: Sequence[int], ttls: Sequence[int], read: Sequence[str] = ()
    ) -> tuple[list[int], list[bytes | None]]:
        counts = self.count(keys, limits, ttls)
        values: list[bytes | None] = [None] * len(read)
        if read and counts[0] == 1 and self._reader is not None:
            values = await self._reader(read)
        return counts, values if counts[0] == 1 else []

    def count(self, keys: Sequence[str], limits: Sequence[int], ttls: Sequence[int]) -> list[int]:
        """The script's decision, in this process: ``[1, counts...]`` counted, ``[0, i, count]`` window i full."""
        now = time.monotonic()
        current = [self._current(key, now) for key in keys]
        for index, (count, limit) in enumerate(zip(current, limits, strict=True), start=1):
            if count >= limit:
                return [0, index, count]
        for key, count, ttl in zip(keys, current, ttls, strict=True):
            expires = self._counts[key][1] if count else now + ttl
            self._counts[key] = (count + 1, expires)
        if len(self._counts) > 100_000:
            self._counts = {key: value for key, value in self._counts.items() if value[1] > now}
        return [1, *(count + 1 for count in current)]

    def _current(self, key: str, now: float) -> int:
        count, expires = self._counts.get(key, (0, 0.0))
        return count if expires > now else 0
