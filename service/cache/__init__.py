"""Caches of question embeddings, retrieved passages and answers, in Redis or in this process.

- :mod:`~service.cache.keys`: tenant-namespaced, hashed keys; question normalization.
- :mod:`~service.cache.entries`: what an entry holds and how a reply is checked before it is believed.
- :mod:`~service.cache.backends`: Redis, or the in-process backend of ``memory://``.
- :mod:`~service.cache.generations`: knowledge-base generations, so a write makes older answers misses.
- :mod:`~service.cache.caches`: :class:`Cache`, the three caches with their switches and TTLs.
"""

from service.cache.backends import CacheBackend, MemoryCacheBackend, RedisCacheBackend
from service.cache.caches import Cache, Lookup, Outcome
from service.cache.keys import CacheName, normalize_question

__all__ = [
    "Cache",
    "CacheBackend",
    "CacheName",
    "Lookup",
    "MemoryCacheBackend",
    "Outcome",
    "RedisCacheBackend",
    "normalize_question",
]
