"""Where cache entries and generations live: Redis, or this process for the single-process ``memory://``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from redis.asyncio import Redis

from service.shared.expiring import ExpiringLRU

__all__ = ["CacheBackend", "MemoryCacheBackend", "RedisCacheBackend"]


class CacheBackend(Protocol):
    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def put(self, key: str, value: bytes, ttl_s: int) -> None: ...

    async def start_generation(self, key: str, candidate: str, ttl_s: int) -> str:
        """The generation stored at ``key``, storing ``candidate`` first if there is none."""
        ...

    async def new_generation(self, key: str, value: str, ttl_s: int) -> None: ...


class RedisCacheBackend:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        values: list[bytes | None] = await self._redis.mget(keys)  # type: ignore[assignment]  # bytes: no decoding
        return values

    async def put(self, key: str, value: bytes, ttl_s: int) -> None:
        await self._redis.set(key, value, ex=ttl_s)

    async def start_generation(self, key: str, candidate: str, ttl_s: int) -> str:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(key, candidate, nx=True, ex=ttl_s)
            pipe.get(key)
            _, current = await pipe.execute()
        return bytes(current).decode()

    async def new_generation(self, key: str, value: str, ttl_s: int) -> None:
        await self._redis.set(key, value, ex=ttl_s)


class MemoryCacheBackend:
    """The same cache for a single process (``memory://``): least recently used entries go past ``max_entries``."""

    def __init__(self, max_entries: int) -> None:
        self._entries: ExpiringLRU[bytes] = ExpiringLRU(max_entries)
        self._generations: dict[str, str] = {}

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self._get(key) for key in keys]

    def _get(self, key: str) -> bytes | None:
        generation = self._generations.get(key)
        if generation is not None:
            return generation.encode()
        return self._entries.get(key)

    async def put(self, key: str, value: bytes, ttl_s: int) -> None:
        self._entries.put(key, value, ttl_s)

    async def start_generation(self, key: str, candidate: str, ttl_s: int) -> str:
        return self._generations.setdefault(key, candidate)

    async def new_generation(self, key: str, value: str, ttl_s: int) -> None:
        self._generations[key] = value
