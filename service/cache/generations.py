"""Freshness: each knowledge base's *generation*, and the rules that make a write invalidate its answers.

A generation is a random token under ``rw:c:{<tenant>}:gen:<kb>`` that is replaced whenever one of the
knowledge base's documents is written or deleted (and expires after the longest entry TTL, so no key is kept
forever). Retrieval and answer entries record the generation they were computed in, and a lookup reads the
generation and the entry in one ``MGET``: an entry of an older generation is a miss. A random token rather
than a counter, so that a generation lost with Redis's memory starts afresh instead of counting up to an old
value.

Two rules close the remaining windows:

- *Settling.* Another replica may read a knowledge base as it was before a write for ``settle_s`` (LanceDB's
  read-consistency interval), and so compute an answer from old data under the new generation. A change
  therefore renews the generation at once and again ``settle_s`` after the latest write (one timer per
  knowledge base, however many writes arrive).
- *Unsaved renewals.* When Redis cannot take a renewal, this process bypasses the knowledge base's cache and
  retries until Redis does (other replicas cannot read Redis meanwhile either).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable

from service.cache.backends import CacheBackend
from service.cache.keys import generation_key
from service.shared.health import RedisHealth, RedisUnavailable

__all__ = ["RETRY_INTERVAL_S", "Generations"]

RETRY_INTERVAL_S = 0.5


class Generations:
    def __init__(self, backend: CacheBackend, health: RedisHealth, *, ttl_s: int, settle_s: float) -> None:
        self._backend = backend
        self._guard = health.guard("cache")
        self._health = health
        self._ttl_s = ttl_s
        self._settle_s = settle_s
        self._unsaved: set[str] = set()
        """Generation keys whose renewal Redis did not take; their knowledge bases bypass the cache meanwhile."""
        self._settling: dict[str, asyncio.TimerHandle] = {}
        """Generation keys to renew again once the latest write has settled."""
        self._retrying: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Future[None]] = set()

    def unsaved(self, key: str | None) -> bool:
        """Whether the knowledge base of generation ``key`` must bypass the cache (its renewal is not saved)."""
        return key in self._unsaved

    async def start(self, key: str) -> str | None:
        """The current generation at ``key``, a new one stored first if there is none, so that a write landing
        during the computation replaces it; ``None`` when Redis cannot say (compute without caching)."""
        if key in self._unsaved:
            return None
        try:
            with self._guard:
                return await self._backend.start_generation(key, secrets.token_hex(8), self._ttl_s)
        except RedisUnavailable:
            return None

    async def invalidate(self, tenant_id: str, kb_id: str) -> None:
        """Make every retrieval and answer cached for the knowledge base stale: a new generation, now and once
        the write has settled."""
        key = generation_key(tenant_id, kb_id)
        if not await self._renew(key):
            self._keep_unsaved(key)
        if self._settle_s > 0:
            self._renew_once_settled(key)

    async def _renew(self, key: str) -> bool:
        try:
            with self._guard:
                await self._backend.new_generation(key, secrets.token_hex(8), self._ttl_s)
        except RedisUnavailable:
            return False
        return True

    def _renew_once_settled(self, key: str) -> None:
        """Renew ``key`` again ``settle_s`` after the latest write: each write moves the one timer later."""
        timer = self._settling.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._settling[key] = asyncio.get_running_loop().call_later(self._settle_s, self._settled, key)

    def _settled(self, key: str) -> None:
        del self._settling[key]
        self._spawn(self._renew_settled(key))

    async def _renew_settled(self, key: str) -> None:
        if not await self._renew(key):
            self._keep_unsaved(key)

    def _keep_unsaved(self, key: str) -> None:
        """Bypass the knowledge base's cache in this process until its renewal is saved (one retrying task)."""
        self._unsaved.add(key)
        if self._retrying is None or self._retrying.done():
            self._retrying = self._spawn(self._retry_unsaved())

    async def _retry_unsaved(self) -> None:
        while self._unsaved:
            await asyncio.sleep(RETRY_INTERVAL_S)
            for key in list(self._unsaved):
                if self._health.up and await self._renew(key):
                    self._unsaved.discard(key)

    def _spawn(self, work: Awaitable[None]) -> asyncio.Future[None]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self) -> None:
        for timer in self._settling.values():
            timer.cancel()
        self._settling.clear()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
