"""The hashing embedder (offline, deterministic) and the word handling the offline providers share."""

from __future__ import annotations

import asyncio
import itertools
import re
import unicodedata
import zlib
from collections.abc import Sequence

import numpy as np

from service.providers.base import Vectors, normalize_rows

__all__ = ["STOPWORDS", "HashingEmbedder", "terms"]

_WORD = re.compile(r"\w+")
_IN_A_THREAD = 64
"""Texts from which one call embeds in a worker thread rather than on the event loop (a few milliseconds)."""
STOPWORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    }
)


def terms(text: str) -> list[str]:
    """Lower-cased, accent-folded words with a naive plural strip ("documents" and "document" match)."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    # Drop the combining marks, or "\w+" would split "zürich" into "zu" and "rich".
    folded = "".join(char for char in decomposed if not unicodedata.combining(char))
    words = _WORD.findall(folded)
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words]


class HashingEmbedder:
    """Signed feature hashing of word unigrams and bigrams: deterministic across processes and machines.

    ``zlib.crc32`` stands in for Python's ``hash``, which is salted per process.
    """

    provider = "ragwatch"

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions
        self.model = f"hashing-{dimensions}"

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if len(texts) >= _IN_A_THREAD:  # a long document's chunks: other requests go on meanwhile
            return await asyncio.to_thread(self.embed_sync, texts)
        return self.embed_sync(texts)

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for row, text in enumerate(texts):
            words = [t for t in terms(text) if t not in STOPWORDS]
            features = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
            if not features:
                continue
            hashes = np.fromiter((zlib.crc32(f.encode()) for f in features), dtype=np.uint64, count=len(features))
            signs = np.where((hashes >> np.uint64(31)) & np.uint64(1), -1.0, 1.0).astype(np.float32)
            weights = np.concatenate([np.ones(len(words)), np.full(len(features) - len(words), 0.5)])
            np.add.at(out[row], (hashes % np.uint64(self.dimensions)).astype(np.intp), signs * weights)
        return normalize_rows(out)
