"""Caches of question embeddings, retrieved passages and answers, in Redis or in this process.

Keys. Every key is ``rw:c:{<tenant>}:<cache>:<digest>``: the tenant's namespace, then a SHA-256 of all that
decides the value (cache, tenant, knowledge base, normalized question, ``top_k``, models, prompt version). No
question or document text is ever part of a key, and keys are built from the authenticated tenant only, so
no request can reach another tenant's entries.

Freshness. Each knowledge base has a *generation*, a random token under ``rw:c:{<tenant>}:gen:<kb>`` that is
replaced whenever one of its documents is written or deleted (and expires after the longest entry TTL).
Retrieval and answer entries record the generation they were computed in, and a lookup reads the generation
and the entry in one ``MGET``: an entry of an older generation is a miss. A random token rather than a
counter, so that a generation lost with Redis's memory starts afresh instead of counting up to an old value.

Integrity. Each entry carries its own key, checked on every read, so a reply that reached the wrong request
(the failure behind redis-py CVE-2023-28858) is never served: it counts as an error and is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Generic, Literal, Protocol, TypeGuard, TypeVar

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.config import CacheSettings
from telemetry import Telemetry, stage

if TYPE_CHECKING:
    from service.shared_state import RedisHealth

__all__ = [
    "Cache",
    "CacheBackend",
    "CacheName",
    "FlightAbandoned",
    "Lookup",
    "MemoryCacheBackend",
    "RedisCacheBackend",
    "SingleFlight",
    "normalize_question",
]

logger = logging.getLogger("ragwatch.cache")
CacheName = Literal["embeddings", "retrieval", "answers"]
Outcome = Literal["hit", "miss", "error", "off"]
REDIS_ERRORS = (RedisError, OSError, TimeoutError)
RETRY_INTERVAL_S = 0.5
T = TypeVar("T")


def normalize_question(question: str) -> str:
    """The form questions are cached under: Unicode NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", question).casefold().split())


class Entry(msgspec.Struct, array_like=True, frozen=True):
    key: str
    generation: str
    value: bytes


_encode_entry = msgspec.msgpack.Encoder().encode
_decode_entry = msgspec.msgpack.Decoder(Entry).decode


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
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._generations: dict[str, str] = {}

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self._get(key) for key in keys]

    def _get(self, key: str) -> bytes | None:
        generation = self._generations.get(key)
        if generation is not None:
            return generation.encode()
        found = self._entries.get(key)
        if found is None:
            return None
        if found[1] <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return found[0]

    async def put(self, key: str, value: bytes, ttl_s: int) -> None:
        self._entries[key] = (value, time.monotonic() + ttl_s)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    async def start_generation(self, key: str, candidate: str, ttl_s: int) -> str:
        return self._generations.setdefault(key, candidate)

    async def new_generation(self, key: str, value: str, ttl_s: int) -> None:
        self._generations[key] = value


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

    ``settle_s`` is how long another replica may read a knowledge base as it was before a write (LanceDB's
    read-consistency interval): a change renews the generation at once and again after that long, so an
    answer computed from the old data by a replica that already saw the new generation is dropped too.
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
        self._health = health
        self._telemetry = telemetry
        self._settle_s = settle_s
        self._ttl: dict[CacheName, int | None] = {
            "embeddings": settings.cache_embeddings_ttl_s if settings.cache_embeddings_enabled else None,
            "retrieval": settings.cache_retrieval_ttl_s if settings.cache_retrieval_enabled else None,
            "answers": settings.cache_answers_ttl_s if settings.cache_answers_enabled else None,
        }
        # A generation outlives every entry made in it; when it expires (or is evicted) a new one starts,
        # which only turns the remaining entries into misses. So no key is kept forever.
        self._generation_ttl_s = max(settings.cache_retrieval_ttl_s, settings.cache_answers_ttl_s)
        self._unsaved: set[str] = set()
        """Generation keys whose renewal Redis did not take; their knowledge bases bypass the cache meanwhile."""
        self._settling: dict[str, asyncio.TimerHandle] = {}
        """Generation keys to renew again once the latest write has settled."""
        self._retrying: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Future[None]] = set()

    def enabled(self, name: CacheName) -> bool:
        return self._ttl[name] is not None

    def read_keys(
        self, name: CacheName, tenant_id: str, parts: Sequence[str], *, kb_id: str | None = None
    ) -> list[str]:
        """The keys :meth:`lookup` reads for these arguments (none when the cache is off), for a caller that
        reads them ahead, in the same round trip as the rate limiter, and passes them as ``prefetched``."""
        if not self.enabled(name):
            return []
        key, generation_key = _keys(name, tenant_id, parts, kb_id)
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
        key, generation_key = _keys(name, tenant_id, parts, kb_id)
        if not self.enabled(name):
            return Lookup(name, key, generation_key, generation, None, "off")
        missing = Lookup(name, key, generation_key, generation, None, "miss")
        if prefetched is not None:
            # Read in the rate limiter's round trip already: nothing here takes time worth a span of its own.
            # The outcome is counted below, and the chat pipeline puts it on the request's server span.
            found = await self._read(missing, prefetched)
        else:
            with stage(self._telemetry, "cache.get", **{"rag.cache.name": name}) as span:
                found = await self._read(missing, prefetched)
                span.set_attribute("rag.cache.outcome", found.outcome)
        self._telemetry.instruments.cache_lookups.add(1, {"cache": name, "outcome": found.outcome})
        return found

    async def _read(self, lookup: Lookup, prefetched: Sequence[bytes | None] | None) -> Lookup:
        if not self._available(lookup.generation_key):
            return replace(lookup, outcome="error")
        read_generation = lookup.generation_key is not None and lookup.generation is None
        keys = [key for key in (lookup.generation_key if read_generation else None, lookup.key) if key is not None]
        if prefetched is not None and len(prefetched) == len(keys):
            replies: object = list(prefetched)
        else:
            try:
                replies = await self._backend.get_many(keys)
            except REDIS_ERRORS as exc:
                self._health.failed("cache", exc)
                return replace(lookup, outcome="error")
            self._health.succeeded()
        if not _is_mget_reply(replies, len(keys)):
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
        try:
            entry = _decode_entry(raw)
        except msgspec.DecodeError:
            logger.error("cache entry %s is not a cache entry; ignored", found.key)
            return replace(found, outcome="error")
        if entry.key != found.key:
            logger.error("cache entry %s holds the value of another key; ignored", found.key)
            return replace(found, outcome="error")
        if found.generation_key is not None and entry.generation != found.generation:
            return found
        return replace(found, value=entry.value, outcome="hit")

    async def current_generation(self, lookup: Lookup) -> str | None:
        """The generation to compute a missed value in: the one the lookup read, else a new one, stored
        before the computation starts so that a write landing meanwhile replaces it. ``None`` when the cache
        cannot be used (Redis down): compute without caching."""
        if lookup.generation is not None or lookup.generation_key is None:
            return lookup.generation
        if lookup.outcome in ("off", "error") or not self._available(lookup.generation_key):
            return None
        try:
            generation = await self._backend.start_generation(
                lookup.generation_key, secrets.token_hex(8), self._generation_ttl_s
            )
        except REDIS_ERRORS as exc:
            self._health.failed("cache", exc)
            return None
        self._health.succeeded()
        return generation

    async def store(self, lookup: Lookup, value: bytes, generation: str | None = None) -> None:
        """Keep ``value`` for what ``lookup`` missed, tagged with the ``generation`` it was computed in."""
        ttl = self._ttl[lookup.name]
        if ttl is None or lookup.outcome == "error" or not self._available(lookup.generation_key):
            return
        if lookup.generation_key is not None and generation is None:
            return
        entry = _encode_entry(Entry(key=lookup.key, generation=generation or "", value=value))
        try:
            await self._backend.put(lookup.key, entry, ttl)
        except REDIS_ERRORS as exc:
            self._health.failed("cache", exc)
        else:
            self._health.succeeded()

    async def invalidate(self, tenant_id: str, kb_id: str) -> None:
        """Make every retrieval and answer cached for the knowledge base stale: a new generation.

        If Redis cannot take it, this process bypasses the cache for that knowledge base and retries until
        Redis does (other replicas cannot read Redis meanwhile either).
        """
        key = _generation_key(tenant_id, kb_id)
        if not await self._renew(key):
            self._keep_unsaved(key)
        if self._settle_s > 0:
            self._renew_once_settled(key)

    def _available(self, generation_key: str | None) -> bool:
        if not self._health.up:
            self._health.skipped("cache")
            return False
        return generation_key not in self._unsaved

    async def _renew(self, key: str) -> bool:
        if not self._health.up:
            self._health.skipped("cache")
            return False
        try:
            await self._backend.new_generation(key, secrets.token_hex(8), self._generation_ttl_s)
        except REDIS_ERRORS as exc:
            self._health.failed("cache", exc)
            return False
        self._health.succeeded()
        return True

    def _renew_once_settled(self, key: str) -> None:
        """Renew ``key`` again ``settle_s`` after the latest write: one timer per knowledge base, however many
        writes arrive meanwhile (each one moves it later; each write has renewed the generation already)."""
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
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class FlightAbandoned(Exception):
    """The caller leading a flight went away before its result; those waiting for it compute it themselves."""


def _keys(name: CacheName, tenant_id: str, parts: Sequence[str], kb_id: str | None) -> tuple[str, str | None]:
    """The entry's key, and its knowledge base's generation key (with ``kb_id``)."""
    digest = hashlib.sha256("\x1f".join([name, tenant_id, kb_id or "", *parts]).encode()).hexdigest()
    generation_key = _generation_key(tenant_id, kb_id) if kb_id is not None else None
    return f"rw:c:{{{tenant_id}}}:{name}:{digest}", generation_key


def _generation_key(tenant_id: str, kb_id: str) -> str:
    return f"rw:c:{{{tenant_id}}}:gen:{kb_id}"


def _is_mget_reply(replies: object, count: int) -> TypeGuard[list[bytes | None]]:
    """Whether ``replies`` has the shape of an ``MGET`` of ``count`` keys (a list of bytes or nil)."""
    return (
        isinstance(replies, list)
        and len(replies) == count
        and all(reply is None or isinstance(reply, bytes) for reply in replies)
    )


class SingleFlight(Generic[T]):
    """At most one computation per key at a time in this process: callers asking for a key already in flight
    wait for its result instead of computing it again.

    :meth:`run` computes in a task of its own, so a caller that goes away (a client disconnects) neither
    cancels it for the others nor wastes it: it still completes, and its result is cached. A caller that must
    compute in its own task (a streamed answer) takes the key with :meth:`claim` and settles the flight itself.
    """

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Future[T]] = {}

    def in_flight(self, key: str) -> asyncio.Future[T] | None:
        return self._flights.get(key)

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
