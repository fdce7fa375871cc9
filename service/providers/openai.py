"""Embeddings and answers from any OpenAI-compatible API (OpenAI, Azure OpenAI, Gemini, Ollama, vLLM)."""

from __future__ import annotations

import email.utils
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import msgspec
import numpy as np
import openai
from openai import AsyncOpenAI, AsyncStream
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from service.errors import (
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    RagwatchError,
)
from service.providers.base import (
    DEFAULT_GENERATION,
    SYSTEM_PROMPT,
    Answer,
    Generation,
    Passage,
    Vectors,
    build_user_prompt,
    count_tokens,
    normalize_rows,
)
from service.providers.resilience import ProviderGuard

__all__ = ["REWRITE_PROMPT", "OpenAIAnswerer", "OpenAIEmbedder", "provider_errors"]

T = TypeVar("T")

REWRITE_PROMPT = (
    "Rewrite the user's follow-up question as one standalone question that can be understood without the "
    "conversation: replace pronouns and references with what they refer to in the earlier questions. Keep its "
    "language and meaning, add nothing else, and reply with the question only."
)


def _translate(exc: openai.OpenAIError) -> RagwatchError:
    """Map a client error to the problem the API reports (502, 503 or 504)."""
    if isinstance(exc, openai.APITimeoutError):
        return ProviderTimeout("The LLM provider did not answer within RAGWATCH_LLM_TIMEOUT_S.")
    if isinstance(exc, openai.APIConnectionError):
        return ProviderUnavailable("The LLM provider could not be reached.")
    if isinstance(exc, openai.RateLimitError):
        retry_after = _retry_after(exc.response.headers)
        headers = {"Retry-After": retry_after} if retry_after is not None else None
        return ProviderRateLimited("The LLM provider refused the call with 429.", headers=headers)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        return ProviderError(f"The LLM provider answered {status}.", transient=status in (408, 409) or status >= 500)
    return ProviderError(f"The LLM provider's reply could not be used ({type(exc).__name__}).")


def _retry_after(headers: Mapping[str, str]) -> str | None:
    """The provider's requested wait as a ``Retry-After`` value: whole seconds (rounded up), or its HTTP date.

    OpenAI sends ``retry-after-ms`` beside ``retry-after``; other servers send seconds with a fraction.
    """
    for name, per_second in (("retry-after-ms", 1000), ("retry-after", 1)):
        raw = (headers.get(name) or "").strip()
        try:
            seconds = float(raw) / per_second
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return str(math.ceil(seconds))
    raw = (headers.get("retry-after") or "").strip()
    try:
        email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    return raw


@asynccontextmanager
async def provider_errors() -> AsyncIterator[None]:
    try:
        yield
    except openai.OpenAIError as exc:
        raise _translate(exc) from exc
    except ValueError as exc:
        # The client lets a body that is not the JSON it claims to be escape as a bare JSONDecodeError.
        raise ProviderError(f"The LLM provider's reply could not be used ({type(exc).__name__}).") from exc


async def _guarded(guard: ProviderGuard, attempt: Callable[[], Awaitable[T]]) -> T:
    """``attempt()`` with its errors translated, admitted, retried and counted by ``guard``."""

    async def translated() -> T:
        async with provider_errors():
            return await attempt()

    return await guard.call(translated)


class OpenAIEmbedder:
    provider = "openai"

    def __init__(self, client: AsyncOpenAI, model: str, dimensions: int, guard: ProviderGuard) -> None:
        self._client = client
        self._guard = guard
        self.model = model
        self.dimensions = dimensions
        # Only the text-embedding-3 family can shorten its vectors; other servers may reject the argument.
        self._extra: dict[str, Any] = {"dimensions": dimensions} if model.startswith("text-embedding-3") else {}

    async def embed(self, texts: Sequence[str]) -> Vectors:
        reply = await _guarded(
            self._guard,
            lambda: self._client.embeddings.create(
                model=self.model, input=list(texts), encoding_format="float", **self._extra
            ),
        )
        try:
            rows = sorted(reply.data, key=lambda item: item.index)
            vectors = np.asarray([row.embedding for row in rows], dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ProviderError(f"The embedding model's reply could not be used ({type(exc).__name__}).") from exc
        if vectors.shape != (len(texts), self.dimensions):
            raise ProviderError(
                f"The embedding model returned vectors of shape {vectors.shape}; expected "
                f"{self.dimensions} wide (set RAGWATCH_EMBEDDING_DIMENSIONS to the model's width)."
            )
        return normalize_rows(vectors)


class OpenAIAnswerStream:
    """Deltas of a streamed chat completion; closing it closes the upstream HTTP response."""

    def __init__(
        self, stream: AsyncStream[ChatCompletionChunk], model: str, prompt_tokens: int, guard: ProviderGuard
    ) -> None:
        self._stream = stream
        self._guard = guard
        self._model = model
        self._prompt_tokens = prompt_tokens
        self.result: Answer | None = None

    async def __aiter__(self) -> AsyncIterator[str]:
        parts: list[str] = []
        finish_reason = "stop"
        model = self._model
        usage = None
        response_id: str | None = None
        try:
            async with provider_errors():
                async for chunk in self._stream:
                    model = chunk.model or model
                    usage = chunk.usage or usage
                    response_id = chunk.id or response_id
                    for choice in chunk.choices:
                        finish_reason = choice.finish_reason or finish_reason
                        if choice.delta.content:
                            parts.append(choice.delta.content)
                            yield choice.delta.content
        except ProviderError as exc:
            self._guard.failed_midway(exc)
            raise
        text = "".join(parts)
        self.result = Answer(
            text=text,
            model=model,
            input_tokens=usage.prompt_tokens if usage else self._prompt_tokens,
            output_tokens=usage.completion_tokens if usage else count_tokens(text),
            finish_reason=finish_reason,
            response_id=response_id,
        )

    async def aclose(self) -> None:
        await self._stream.close()


class OpenAIAnswerer:
    provider = "openai"
    version = "1"  # the prompt's own version is part of the answer-cache key besides this

    def __init__(self, client: AsyncOpenAI, model: str, max_output_tokens: int, guard: ProviderGuard) -> None:
        self._client = client
        self._guard = guard
        self.model = model
        self._max_tokens = max_output_tokens

    def _messages(self, question: str, passages: Sequence[Passage]) -> list[ChatCompletionMessageParam]:
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": build_user_prompt(question, passages)},
        ]

    def effective(self, generation: Generation) -> Generation:
        """The caller's ``max_tokens`` up to ``RAGWATCH_LLM_MAX_OUTPUT_TOKENS`` (that, when it gave none), and its
        ``temperature`` when it gave one (else the provider's default)."""
        wanted = generation.max_tokens
        return Generation(min(wanted, self._max_tokens) if wanted else self._max_tokens, generation.temperature)

    def _options(self, generation: Generation) -> dict[str, Any]:
        """The call's sampling options, as :meth:`effective` says."""
        sent = self.effective(generation)
        options: dict[str, Any] = {"max_tokens": sent.max_tokens}
        if sent.temperature is not None:
            options["temperature"] = sent.temperature
        return options

    async def answer(
        self, question: str, passages: Sequence[Passage], generation: Generation = DEFAULT_GENERATION
    ) -> Answer:
        messages = self._messages(question, passages)
        return await self._complete(messages, _prompt_tokens(question, passages), **self._options(generation))

    async def rewrite(self, question: str, earlier: Sequence[str], generation: Generation) -> Answer:
        """``question`` as a standalone question, from the conversation's ``earlier`` questions."""
        history = "\n".join(f"{number}. {turn}" for number, turn in enumerate(earlier, start=1))
        prompt = f"Earlier questions, oldest first:\n{history}\n\nFollow-up question: {question}"
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": REWRITE_PROMPT},
            {"role": "user", "content": prompt},
        ]
        tokens = count_tokens(REWRITE_PROMPT) + count_tokens(prompt)
        answer = await self._complete(messages, tokens, **self._options(generation))
        return msgspec.structs.replace(answer, text=answer.text.strip() or question)

    async def _complete(self, messages: list[ChatCompletionMessageParam], prompt_tokens: int, **options: Any) -> Answer:
        reply = await _guarded(
            self._guard, lambda: self._client.chat.completions.create(model=self.model, messages=messages, **options)
        )
        if not reply.choices:
            raise ProviderError("The LLM provider returned no choices.")
        choice = reply.choices[0]
        text = choice.message.content or ""
        return Answer(
            text=text,
            model=reply.model or self.model,
            input_tokens=reply.usage.prompt_tokens if reply.usage else prompt_tokens,
            output_tokens=reply.usage.completion_tokens if reply.usage else count_tokens(text),
            finish_reason=choice.finish_reason or "stop",
            response_id=reply.id or None,
        )

    async def stream(
        self, question: str, passages: Sequence[Passage], generation: Generation = DEFAULT_GENERATION
    ) -> OpenAIAnswerStream:
        messages = self._messages(question, passages)
        options = self._options(generation)
        stream = await _guarded(
            self._guard,
            lambda: self._client.chat.completions.create(
                model=self.model, messages=messages, stream=True, stream_options={"include_usage": True}, **options
            ),
        )
        return OpenAIAnswerStream(stream, self.model, _prompt_tokens(question, passages), self._guard)


def _prompt_tokens(question: str, passages: Sequence[Passage]) -> int:
    return count_tokens(SYSTEM_PROMPT) + count_tokens(build_user_prompt(question, passages))
