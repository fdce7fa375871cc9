"""Embedders and answerers: the offline default or an OpenAI-compatible API, chosen by settings."""

from __future__ import annotations

from dataclasses import dataclass

from openai import AsyncOpenAI, DefaultAsyncHttpxClient

from service.config import Settings
from service.providers.base import PROMPT_VERSION, Answer, Answerer, AnswerStream, Embedder, Passage
from service.providers.offline import NO_ANSWER, ExtractiveAnswerer, HashingEmbedder
from service.providers.openai import OpenAIAnswerer, OpenAIEmbedder
from telemetry import Telemetry
from telemetry.http import instrument_http_client

__all__ = [
    "NO_ANSWER",
    "PROMPT_VERSION",
    "Answer",
    "AnswerStream",
    "Answerer",
    "Embedder",
    "Passage",
    "Providers",
    "build_providers",
]


@dataclass
class Providers:
    embedder: Embedder
    answerer: Answerer
    client: AsyncOpenAI | None
    """The shared ``openai`` client, when a provider uses it; closed at shutdown."""

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.close()


def build_providers(settings: Settings, telemetry: Telemetry | None = None) -> Providers:
    """The providers the settings choose; with ``telemetry``, calls to an OpenAI-compatible API are traced."""
    chosen = settings.providers
    client = _openai_client(settings, telemetry) if "openai" in (chosen.embedder, chosen.llm) else None
    embedder: Embedder = (
        OpenAIEmbedder(client, chosen.embedding_model, chosen.embedding_dimensions)
        if client is not None and chosen.embedder == "openai"
        else HashingEmbedder(chosen.embedding_dimensions)
    )
    answerer: Answerer = (
        OpenAIAnswerer(client, chosen.llm_model, chosen.llm_max_output_tokens)
        if client is not None and chosen.llm == "openai"
        else ExtractiveAnswerer()
    )
    return Providers(embedder=embedder, answerer=answerer, client=client)


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
        max_retries=settings.providers.llm_max_retries,
    )
