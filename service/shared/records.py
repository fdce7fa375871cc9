"""Small records every replica must see alike (conversation turns, idempotent results): Redis, or this process.

Unlike cache entries, a lost record is visible to a client (a conversation forgets a turn, a retried upload is
ingested twice), so each operation is atomic in Redis: a turn is appended and the list trimmed and renewed in
one transaction, and a result is claimed with ``SET NX``. Every call goes through the Redis health guard of
its operation, so an outage costs no timeouts; each caller decides what :class:`RedisUnavailable` means.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Protocol

from redis.asyncio import Redis

from service.shared.expiring import ExpiringLRU
from service.shared.health import RedisHealth

__all__ = ["MemoryRecords", "Records", "RedisRecords", "record_key"]


def record_key(kind: str, *parts: str) -> str:
    """The key of a record of ``kind`` named by ``parts`` (tenant, user, id…): a digest, so that no part can
    run into another's, whatever characters it holds."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"ragwatch:{kind}:{digest[:40]}"


class Records(Protocol):
    async def get(self, operation: str, key: str) -> bytes | None: ...

    async def claim(self, operation: str, key: str, value: bytes, ttl_s: int) -> bytes | None:
        """Store ``value`` unless ``key`` holds one: ``None`` when stored, else the value already there."""
        ...

    async def put(self, operation: str, key: str, value: bytes, ttl_s: int) -> None: ...

    async def put_many(self, operation: str, values: Mapping[str, bytes], ttl_s: int) -> None:
        """Store every value at its key in one round trip."""
        ...

    async def delete(self, operation: str, key: str) -> bool:
        """Whether there was something to delete."""
        ...

    async def swap(self, operation: str, key: str, expected: bytes, value: bytes | None, ttl_s: int) -> bool:
        """Replace the value at ``key`` with ``value`` (delete it for ``None``) only if it still is ``expected``;
        whether it was."""
        ...

    async def append(self, operation: str, key: str, value: bytes, *, keep: int, ttl_s: int) -> None:
        """Add ``value`` to the list at ``key``, keep its last ``keep`` values, and renew its lifetime."""
        ...

    async def values(self, operation: str, key: str) -> list[bytes]:
        """The list at ``key``, oldest first (empty when there is none)."""
        ...


_SWAP = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) end
return 1
"""


class RedisRecords:
    def __init__(self, redis: Redis, health: RedisHealth) -> None:
        self._redis = redis
        self._health = health
        self._swap = redis.register_script(_SWAP)

    async def get(self, operation: str, key: str) -> bytes | None:
        with self._health.guard(operation):
            value: bytes | None = await self._redis.get(key)  # type: ignore[assignment]  # bytes: no decoding
        return value

    async def claim(self, operation: str, key: str, value: bytes, ttl_s: int) -> bytes | None:
        with self._health.guard(operation):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(key, value, nx=True, ex=ttl_s)
                pipe.get(key)
                stored, current = await pipe.execute()
        return None if stored else current

    async def put(self, operation: str, key: str, value: bytes, ttl_s: int) -> None:
        with self._health.guard(operation):
            await self._redis.set(key, value, ex=ttl_s)

    async def put_many(self, operation: str, values: Mapping[str, bytes], ttl_s: int) -> None:
        with self._health.guard(operation):
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, value in values.items():
                    pipe.set(key, value, ex=ttl_s)
                await pipe.execute()

    async def delete(self, operation: str, key: str) -> bool:
        with self._health.guard(operation):
            return bool(await self._redis.delete(key))

    async def swap(self, operation: str, key: str, expected: bytes, value: bytes | None, ttl_s: int) -> bool:
        with self._health.guard(operation):
            swapped = await self._swap(keys=[key], args=[expected, value or b"", ttl_s])
        return bool(swapped)

    async def append(self, operation: str, key: str, value: bytes, *, keep: int, ttl_s: int) -> None:
        with self._health.guard(operation):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(key, value)
                pipe.ltrim(key, -keep, -1)
                pipe.expire(key, ttl_s)
                await pipe.execute()

    async def values(self, operation: str, key: str) -> list[bytes]:
        with self._health.guard(operation):
            found: list[bytes] = await self._redis.lrange(key, 0, -1)  # type: ignore[assignment]  # bytes: no decoding
        return found


class MemoryRecords:
    """The same records for a single process (``memory://``): the least recently used go past ``max_entries``."""

    def __init__(self, max_entries: int) -> None:
        self._entries: ExpiringLRU[bytes | list[bytes]] = ExpiringLRU(max_entries)

    async def get(self, operation: str, key: str) -> bytes | None:
        value = self._entries.get(key)
        return value if isinstance(value, bytes) else None

    async def claim(self, operation: str, key: str, value: bytes, ttl_s: int) -> bytes | None:
        current = await self.get(operation, key)
        if current is None:
            self._entries.put(key, value, ttl_s)
        return current

    async def put(self, operation: str, key: str, value: bytes, ttl_s: int) -> None:
        self._entries.put(key, value, ttl_s)

    async def put_many(self, operation: str, values: Mapping[str, bytes], ttl_s: int) -> None:
        for key, value in values.items():
            self._entries.put(key, value, ttl_s)

    async def delete(self, operation: str, key: str) -> bool:
        return self._entries.pop(key)

    async def swap(self, operation: str, key: str, expected: bytes, value: bytes | None, ttl_s: int) -> bool:
        if self._entries.get(key) != expected:
            return False
        if value is None:
            self._entries.pop(key)
        else:
            self._entries.put(key, value, ttl_s)
        return True

    async def append(self, operation: str, key: str, value: bytes, *, keep: int, ttl_s: int) -> None:
        current = self._entries.get(key)
        earlier: Sequence[bytes] = current if isinstance(current, list) else []
        self._entries.put(key, [*earlier, value][-keep:], ttl_s)

    async def values(self, operation: str, key: str) -> list[bytes]:
        value = self._entries.get(key)
        return list(value) if isinstance(value, list) else []
