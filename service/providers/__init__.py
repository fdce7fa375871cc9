"""Embedders and answerers: the offline default or an OpenAI-compatible API, chosen by settings."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from openai import AsyncOpenAI, DefaultAsyncHttpxClient

from service.config import Settings
from service.providers.base import (
    DEFAULT_GENERATION,
    PROMPT_VERSION,
    REWRITE_GENERATION,
    Answer,
    Answerer,
    AnswerStream,
    Embedder,
    Generation,
    Passage,
    QuestionRewriter,
)
from service.providers.extractive import NO_ANSWER, ExtractiveAnswerer
from service.providers.offline import HashingEmbedder
from service.providers.openai import OpenAIAnswerer, OpenAIEmbedder
from service.providers.resilience import CircuitBreaker, ProviderGuard, RetryBudget
from service.providers.wordllama import WORDLLAMA_WIDTH, WordLlamaEmbedder
from telemetry import Telemetry
from telemetry.http import instrument_http_client

__all__ = [
    "DEFAULT_GENERATION",
    "DEFAULT_WIDTH",
    "NO_ANSWER",
    "PROMPT_VERSION",
    "REWRITE_GENERATION",
    "Answer",
    "AnswerStream",
    "Answerer",
    "Embedder",
    "Generation",
    "Passage",
    "Providers",
    "QuestionRewriter",
    "build_providers",
    "min_similarity",
]

DEFAULT_WIDTH = 384
"""The vector width of the hashing embedder and the one asked of OpenAI's models, unless set otherwise."""
_MIN_SIMILARITY = {"wordllama": 0.3}
"""Each embedder's default ``RAGWATCH_MIN_SIMILARITY``; 0.2 for the others (see the setting)."""


def min_similarity(settings: Settings) -> float:
    """``RAGWATCH_MIN_SIMILARITY``, or the chosen embedder's default."""
    chosen = settings.rag.min_similarity
    return chosen if chosen is not None else _MIN_SIMILARITY.get(settings.providers.embedder, 0.2)


@dataclass
class Providers:
    embedder: Embedder
    answerer: Answerer
    client: AsyncOpenAI | None
    """The shared ``openai`` client, when a provider uses it; closed at shutdown."""

    async def start(self) -> None:
        """Load what the providers load from disk (the WordLlama model), off the event loop."""
        if isinstance(self.embedder, WordLlamaEmbedder):
            await asyncio.to_thread(self.embedder.load)

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.close()


def build_providers(settings: Settings, telemetry: Telemetry | None = None) -> Providers:
    """The providers the settings choose; with ``telemetry``, calls to an OpenAI-compatible API are traced."""
    chosen = settings.providers
    client = _openai_client(settings, telemetry) if "openai" in (chosen.embedder, chosen.llm) else None
    width = chosen.embedding_dimensions
    embedder: Embedder
    if client is not None and chosen.embedder == "openai":
        embedder = OpenAIEmbedder(
            client, chosen.embedding_model, width or DEFAULT_WIDTH, _guard(settings, "embeddings", telemetry)
        )
    elif chosen.embedder == "hashing":
        embedder = HashingEmbedder(width or DEFAULT_WIDTH)
    else:
        embedder = WordLlamaEmbedder(width or WORDLLAMA_WIDTH)
    answerer: Answerer = (
        OpenAIAnswerer(client, chosen.llm_model, chosen.llm_max_output_tokens, _guard(settings, "chat", telemetry))
        if client is not None and chosen.llm == "openai"
        else ExtractiveAnswerer(
            embedder.embed_sync if isinstance(embedder, WordLlamaEmbedder | HashingEmbedder) else None
        )
    )
    return Providers(embedder=embedder, answerer=answerer, client=client)


def _guard(settings: Settings, operation: str, telemetry: Telemetry | None) -> ProviderGuard:
    """The circuit breaker and retry budget of one operation (``chat``, ``embeddings``) of the provider."""
    chosen = settings.providers
    labels = {"provider": "openai", "operation": operation}
    if telemetry is None:
        return ProviderGuard(
            CircuitBreaker(chosen.llm_breaker_failures, chosen.llm_breaker_cooldown_s),
            RetryBudget(chosen.llm_retry_budget),
            chosen.llm_max_retries,
        )
    instruments = telemetry.instruments
    instruments.llm_circuit_open.set(0, labels)  # the series from the first scrape
    for outcome in ("retried", "over_budget"):
        instruments.llm_retries.add(0, {**labels, "outcome": outcome})
    return ProviderGuard(
        CircuitBreaker(
            chosen.llm_breaker_failures,
            chosen.llm_breaker_cooldown_s,
            on_change=lambda is_open: instruments.llm_circuit_open.set(int(is_open), labels),
        ),
        RetryBudget(chosen.llm_retry_budget),
        chosen.llm_max_retries,
        on_retry=lambda outcome: instruments.llm_retries.add(1, {**labels, "outcome": outcome}),
    )


def _openai_client(settings: Settings, telemetry: Telemetry | None) -> AsyncOpenAI:
    key = settings.openai.api_key
    http_client = DefaultAsyncHttpxClient()
    if telemetry is not None:
        instrument_http_client(http_client, telemetry)
    return AsyncOpenAI(
        http_client=http_client,
        # Local servers (Ollama, vLLM) accept any key, but the client insists on one.
        api_key=key.reveal() if key is not None else "unused",
        base_url=settings.openai.base_url,
        timeout=settings.providers.llm_timeout_s,
        max_retries=0,  # retries are the guards' (_guard): admitted by the circuit breaker, from the retry budget
    )
