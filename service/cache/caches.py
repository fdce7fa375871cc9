"""The three caches (question embeddings, retrieved passages, answers) over one backend.

Each cache has its own switch and TTL. A lookup tells what it found in a :class:`Lookup`, which a later
:meth:`Cache.store` of the computed value takes back. Keys are built in :mod:`service.cache.keys`, entries
checked in :mod:`service.cache.entries`, knowledge-base generations kept in :mod:`service.cache.generations`;
every call to Redis goes through the Redis health guard, so an outage turns lookups into ``error`` outcomes
(and the request is computed afresh) without waiting for Redis.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from service.cache.backends import CacheBackend
from service.cache.entries import Entry, decode_entry, encode_entry, is_mget_reply
from service.cache.generations import Generations
from service.cache.keys import CacheName, entry_keys
from service.config import CacheSettings
from service.shared.health import RedisHealth, RedisUnavailable
from telemetry import Telemetry, stage

__all__ = ["Cache", "Lookup", "Outcome"]

logger = logging.getLogger("ragwatch.cache")
Outcome = Literal["hit", "miss", "error", "off"]


@dataclass(frozen=True)
class Lookup:
    """What a cache lookup found: the entry's ``value`` on a hit, and what a later :meth:`Cache.store` needs."""

    name: CacheName
    key: str
    generation_key: str | None
    generation: str | None
    value: bytes | None
    outcome: Outcome


class Cache:
    """The three caches over one backend, each with its own switch and TTL.

    ``settle_s`` is how long another replica may read a knowledge base as it was before a write (see
    :class:`~service.cache.generations.Generations`).
    """

    def __init__(
        self,
        backend: CacheBackend,
        settings: CacheSettings,
        health: RedisHealth,
        telemetry: Telemetry,
        *,
        settle_s: float,
    ) -> None:
        self._backend = backend
        self._guard = health.guard("cache")
        self._telemetry = telemetry
        self._ttl: dict[CacheName, int | None] = {
            "embeddings": settings.embeddings_ttl_s if settings.embeddings_enabled else None,
            "retrieval": settings.retrieval_ttl_s if settings.retrieval_enabled else None,
            "answers": settings.answers_ttl_s if settings.answers_enabled else None,
        }
        # A generation outlives every entry made in it; when it expires (or is evicted) a new one starts,
        # which only turns the remaining entries into misses. So no key is kept forever.
        ttl_s = max(settings.retrieval_ttl_s, settings.answers_ttl_s)
        self.generations = Generations(backend, health, ttl_s=ttl_s, settle_s=settle_s)
        lookups = telemetry.instruments.cache_lookups
        for name in self._ttl:  # every series from the first scrape, so a healthy cache shows 0, not "No data"
            for outcome in ("hit", "miss", "error"):
                lookups.add(0, {"cache": name, "outcome": outcome})

    def enabled(self, name: CacheName) -> bool:
        return self._ttl[name] is not None

    def read_keys(
        self, name: CacheName, tenant_id: str, parts: Sequence[str], *, kb_id: str | None = None
    ) -> list[str]:
        """The keys :meth:`lookup` reads for these arguments (none when the cache is off), for a caller that
        reads them ahead, in the same round trip as the rate limiter, and passes them as ``prefetched``."""
        if not self.enabled(name):
            return []
        key, generation_key = entry_keys(name, tenant_id, parts, kb_id)
        return [generation_key, key] if generation_key is not None else [key]

    async def lookup(
        self,
        name: CacheName,
        tenant_id: str,
        parts: Sequence[str],
        *,
        kb_id: str | None = None,
        generation: str | None = None,
        prefetched: Sequence[bytes | None] | None = None,
    ) -> Lookup:
        """Look ``parts`` up in cache ``name``; with ``kb_id``, only an entry of the knowledge base's current
        generation (``generation`` when the caller already read it) is a hit. ``prefetched``: the values of
        :meth:`read_keys`, when the caller has read them already."""
        key, generation_key = entry_keys(name, tenant_id, parts, kb_id)
        if not self.enabled(name):
            return Lookup(name, key, generation_key, generation, None, "off")
        missing = Lookup(name, key, generation_key, generation, None, "miss")
        if prefetched is not None:
            # Read in the rate limiter's round trip already: nothing here takes time worth a span of its own.
            # The outcome is counted below, and the chat flow puts it on the request's server span.
            found = await self._read(missing, prefetched)
        else:
            with stage(self._telemetry, "cache.get", **{"rag.cache.name": name}) as span:
                found = await self._read(missing, prefetched)
                span.set_attribute("rag.cache.outcome", found.outcome)
        self._telemetry.instruments.cache_lookups.add(1, {"cache": name, "outcome": found.outcome})
        return found

    async def _read(self, lookup: Lookup, prefetched: Sequence[bytes | None] | None) -> Lookup:
        if self.generations.unsaved(lookup.generation_key):
            return replace(lookup, outcome="error")
        read_generation = lookup.generation_key is not None and lookup.generation is None
        keys = [key for key in (lookup.generation_key if read_generation else None, lookup.key) if key is not None]
        if prefetched is not None and len(prefetched) == len(keys):
            replies: object = list(prefetched)
        else:
            try:
                with self._guard:
                    replies = await self._backend.get_many(keys)
            except RedisUnavailable:
                return replace(lookup, outcome="error")
        if not is_mget_reply(replies, len(keys)):
            logger.error("cache read of %s got a reply that is not its own; ignored", lookup.key)
            return replace(lookup, outcome="error")
        generation = lookup.generation
        if read_generation:
            generation = replies[0].decode() if replies[0] is not None else None
        return self._entry(replace(lookup, generation=generation), replies[-1])

    def _entry(self, found: Lookup, raw: bytes | None) -> Lookup:
        """A hit when ``raw`` is an entry of ``found``'s key and (for a knowledge base) current generation."""
        if raw is None:
            return found
        entry = decode_entry(raw)
        if entry is None:
            logger.error("cache entry %s is not a cache entry; ignored", found.key)
            return replace(found, outcome="error")
        if entry.key != found.key:
            logger.error("cache entry %s holds the value of another key; ignored", found.key)
            return replace(found, outcome="error")
        if found.generation_key is not None and entry.generation != found.generation:
            return found
        return replace(found, value=entry.value, outcome="hit")

    async def current_generation(self, lookup: Lookup) -> str | None:
        """The generation to compute a missed value in: the one the lookup read, else a new one, stored before
        the computation starts. ``None`` when the cache cannot be used (Redis down): compute without caching."""
        if lookup.generation is not None or lookup.generation_key is None:
            return lookup.generation
        if lookup.outcome in ("off", "error"):
            return None
        return await self.generations.start(lookup.generation_key)

    async def store(self, lookup: Lookup, value: bytes, generation: str | None = None) -> None:
        """Keep ``value`` for what ``lookup`` missed, tagged with the ``generation`` it was computed in."""
        ttl = self._ttl[lookup.name]
        if ttl is None or lookup.outcome == "error" or self.generations.unsaved(lookup.generation_key):
            return
        if lookup.generation_key is not None and generation is None:
            return
        entry = encode_entry(Entry(key=lookup.key, generation=generation or "", value=value))
        try:
            with self._guard:
                await self._backend.put(lookup.key, entry, ttl)
        except RedisUnavailable:
            return

    async def invalidate(self, tenant_id: str, kb_id: str) -> None:
        """Make every retrieval and answer cached for the knowledge base stale (a new generation)."""
        await self.generations.invalidate(tenant_id, kb_id)

    async def aclose(self) -> None:
        await self.generations.aclose()
