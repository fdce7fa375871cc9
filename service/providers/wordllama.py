"""The offline default embedder: WordLlama's static embeddings, shipped inside the ``wordllama`` wheel (MIT).

A token-embedding table distilled from a large language model, averaged over the text's tokens: semantic
("car" is near "vehicle"), no network, no GPU, tens of microseconds per text. The wheel holds the 256-wide
``l2_supercat`` model and its tokenizer; WordLlama 0.4 looks for the tokenizer in the wrong folder and then
tries to download it, so it is loaded from the package's own folder with downloads disabled. Narrower widths
are the model's leading dimensions (it was trained Matryoshka-style for that).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.providers.base import Vectors, normalize_rows

__all__ = ["WORDLLAMA_WIDTH", "WordLlamaEmbedder"]

WORDLLAMA_WIDTH = 256
"""The width of the model in the wheel; narrower ones are its leading dimensions."""
_IN_A_THREAD = 256
"""Texts from which one call embeds in a worker thread rather than on the event loop (about 4 ms of work)."""


class WordLlamaEmbedder:
    provider = "ragwatch"

    def __init__(self, dimensions: int = WORDLLAMA_WIDTH) -> None:
        if not 64 <= dimensions <= WORDLLAMA_WIDTH:
            raise ValueError(f"WordLlama embeds 64 to {WORDLLAMA_WIDTH} dimensions, not {dimensions}")
        self.dimensions = dimensions
        self.model = f"wordllama-l2-supercat-{dimensions}"
        self._model: Any = None

    def load(self) -> None:
        """Load the model from the wheel (about a second, once); :meth:`embed` loads it if this was not called."""
        if self._model is None:
            import wordllama  # noqa: PLC0415 - its import (tokenizers, pydantic) is paid only by those who use it

            self._model = wordllama.WordLlama.load(
                cache_dir=Path(wordllama.__file__).parent,
                disable_download=True,
                trunc_dim=self.dimensions if self.dimensions < WORDLLAMA_WIDTH else None,
            )

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if self._model is None:
            await asyncio.to_thread(self.load)
        if len(texts) >= _IN_A_THREAD:
            return await asyncio.to_thread(self.embed_sync, texts)
        return self.embed_sync(texts)

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        self.load()
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        vectors = np.asarray(self._model.embed(list(texts), norm=False), dtype=np.float32)
        return normalize_rows(vectors.reshape(len(texts), self.dimensions))
