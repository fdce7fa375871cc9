"""A bounded map whose entries expire: the in-process stand-in for Redis keys with a TTL (``memory://``)."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["ExpiringLRU"]

V = TypeVar("V")


class ExpiringLRU(Generic[V]):
    """Entries live ``ttl_s`` from when they were put; past ``max_entries`` the least recently used go."""

    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[V, float]] = OrderedDict()

    def get(self, key: str) -> V | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if found[1] <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return found[0]

    def put(self, key: str, value: V, ttl_s: float) -> None:
        self._entries[key] = (value, time.monotonic() + ttl_s)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def pop(self, key: str) -> bool:
        """Remove ``key``; whether it was there (and not expired)."""
        return self.get(key) is not None and self._entries.pop(key, None) is not None
