"""Embedding calls as the rest of the service makes them: batched, each one a GenAI span with tokens and cost."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.limits import TokenBudgets
from service.pricing import PriceTable
from service.providers import Embedder
from service.providers.base import Vectors, count_tokens, is_remote
from telemetry import Telemetry, genai_call

__all__ = ["EMBED_BATCH", "Embeddings"]

EMBED_BATCH = 128
"""Texts per embedding call: what providers accept in one request with room to spare."""


class Embeddings:
    def __init__(self, embedder: Embedder, telemetry: Telemetry, prices: PriceTable, budgets: TokenBudgets) -> None:
        self._embedder = embedder
        self._budgets = budgets if is_remote(embedder) else None
        self._telemetry = telemetry
        self._prices = prices
        telemetry.instruments.declare_model("embeddings", embedder.provider, embedder.model)

    @property
    def model(self) -> str:
        return self._embedder.model

    @property
    def dimensions(self) -> int:
        return self._embedder.dimensions

    async def embed_all(self, texts: Sequence[str], tenant_id: str) -> Vectors:
        """One row per text, in batches of :data:`EMBED_BATCH`."""
        batches = [texts[i : i + EMBED_BATCH] for i in range(0, len(texts), EMBED_BATCH)]
        parts = [await self.embed(batch, tenant_id) for batch in batches]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    async def embed(self, texts: Sequence[str], tenant_id: str) -> Vectors:
        """One call: the ``embeddings {model}`` span, its tokens and its cost; a remote one counted against the
        tenant's token budget, and refused once that is spent."""
        embedder, budgets = self._embedder, self._budgets
        if budgets is not None:
            await budgets.check(tenant_id)
        with genai_call(
            self._telemetry,
            "embeddings",
            embedder.provider,
            embedder.model,
            tenant_id=tenant_id,
            remote=is_remote(embedder),
        ) as call:
            vectors = await embedder.embed(texts)
            call.response_model = embedder.model
            # The Embedder interface returns vectors only; tokens are counted the way the offline default does.
            call.input_tokens = sum(count_tokens(text) for text in texts)
            call.cost_usd = self._prices.cost(embedder.model, call.input_tokens, 0)
        if budgets is not None:
            await budgets.spend(tenant_id, call.input_tokens)
        return vectors
