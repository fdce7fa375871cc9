"""The answering step: the answer cache, single flight for identical questions, and the LLM call.

An answer is cached under everything that decides it (tenant, knowledge base and its generation, normalized
question, ``top_k``, embedder, answerer, prompt version, similarity floor). Identical questions arriving
together in one process share one computation (:mod:`service.singleflight`). Each LLM call is one GenAI span
with its tokens, cost and time to first token: for a whole answer the first token arrives with the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import replace

import anyio

from service.cache import Cache, Lookup, normalize_question
from service.chat.answers import AnswerDelta, AnswerRecord, encode_record
from service.chat.quality import assess
from service.chat.question import Question
from service.limits import TokenBudgets
from service.models import Passage
from service.pricing import PriceTable
from service.providers import (
    NO_ANSWER,
    PROMPT_VERSION,
    REWRITE_GENERATION,
    Answer,
    Answerer,
    AnswerStream,
    Generation,
    QuestionRewriter,
)
from service.providers.base import is_remote
from service.singleflight import SingleFlight
from telemetry import GenAICall, Telemetry, record_answer_quality, stage, update_request

__all__ = ["Answering"]


class Answering:
    def __init__(
        self,
        answerer: Answerer,
        cache: Cache,
        telemetry: Telemetry,
        prices: PriceTable,
        *,
        embedding_model: str,
        retrieval: str,
        budgets: TokenBudgets,
    ) -> None:
        """``retrieval``: what decides the passages besides the question (:attr:`Retriever.version`);
        ``budgets``: what a remote answerer's calls are checked and counted against."""
        self._answerer = answerer
        self._budgets = budgets if is_remote(answerer) else None
        self._cache = cache
        self._telemetry = telemetry
        self._prices = prices
        self._embedding_model = embedding_model
        self._retrieval = retrieval
        self._rewriter = answerer if isinstance(answerer, QuestionRewriter) else None
        self._flights: SingleFlight[AnswerRecord] = SingleFlight()
        telemetry.instruments.declare_model("chat", answerer.provider, answerer.model)

    # --- the answer cache and single flight --------------------------------------------------------------

    def read_keys(self, tenant_id: str, question: Question) -> list[str]:
        """The keys the answer cache reads for this question, for the rate limiter to read in its round trip."""
        return self._cache.read_keys("answers", tenant_id, self._parts(question), kb_id=question.kb_id)

    async def lookup(self, tenant_id: str, question: Question, prefetched: Sequence[bytes | None] | None) -> Lookup:
        """The cached answer, if any; its outcome goes on the request's server span and log records."""
        parts = self._parts(question)
        lookup = await self._cache.lookup("answers", tenant_id, parts, kb_id=question.kb_id, prefetched=prefetched)
        update_request(cache=lookup.outcome)
        return lookup

    def _parts(self, question: Question) -> list[str]:
        """What decides an answer, besides the tenant and the knowledge base (and its generation); the earlier
        questions of a conversation and the generation options only when there are some, so a lone question
        keeps its keys."""
        answerer = self._answerer
        parts = [
            normalize_question(question.text),
            str(question.top_k),
            self._embedding_model,
            f"{answerer.provider}/{answerer.model}/{answerer.version}",
            PROMPT_VERSION,
            self._retrieval,
        ]
        if generation := question.generation.key():
            parts.append(generation)
        return parts + [f"earlier: {normalize_question(turn)}" for turn in question.context]

    async def generation(self, lookup: Lookup) -> str | None:
        """The knowledge base's generation to compute the missed answer in (``None``: do not cache it)."""
        return await self._cache.current_generation(lookup)

    async def keep(self, lookup: Lookup, record: AnswerRecord, generation: str | None) -> None:
        """Cache ``record``; shielded, so a client hanging up now does not lose an answer already paid for."""
        with anyio.CancelScope(shield=True):
            await self._cache.store(lookup, encode_record(record), generation)

    def claim(self, lookup: Lookup) -> asyncio.Future[AnswerRecord] | None:
        """The flight of this question for the caller to settle, or ``None`` when one is in flight already."""
        return self._flights.claim(_flight_key(lookup))

    async def shared(self, lookup: Lookup, compute: Callable[[], Awaitable[AnswerRecord]]) -> AnswerRecord:
        """The answer of the flight in progress for this question, or of a new one computed by ``compute`` in a
        task of its own (it completes, and is cached, even if this caller goes away)."""
        key = _flight_key(lookup)
        if not self._flights.in_flight(key):
            return await self._flights.run(key, compute)
        with stage(self._telemetry, "rag.singleflight.wait"):
            return await self._flights.run(key, compute)

    # --- the LLM call ----------------------------------------------------------------------------------------

    async def standalone(self, tenant_id: str, question: Question) -> Question:
        """A follow-up made standalone by the LLM (one GenAI call), when the answerer can; then retrieval and
        the answer read the rewritten question alone. Otherwise ``question`` as it is: retrieval weighs its
        earlier questions in."""
        rewriter = self._rewriter
        if not question.context or rewriter is None:
            return question
        await self._check_budget(tenant_id)
        with self._call(tenant_id, question.text, REWRITE_GENERATION, step="rewrite") as call:
            rewritten = await rewriter.rewrite(question.text, question.context, REWRITE_GENERATION)
            self._describe(call, rewritten)
        await self._spend(tenant_id, rewritten)
        return replace(question, text=rewritten.text, context=())

    def no_answer(self) -> Answer:
        """Nothing relevant was retrieved: say so without spending an LLM call."""
        return Answer(text=NO_ANSWER, model=self._answerer.model, input_tokens=0, output_tokens=0, finish_reason="stop")

    async def generate(
        self, tenant_id: str, asked: Question, passages: Sequence[Passage], *, stream: bool
    ) -> AsyncGenerator[AnswerDelta | Answer, None]:
        """Deltas of the answer, then the whole :class:`Answer`, unless the stream ends early (the caller closed
        it: the upstream call is closed too). ``stream=False`` asks the provider for the whole answer at once.
        The answer's quality signals go on its span (:mod:`service.chat.quality`)."""
        question, generation = asked.text, asked.generation
        if not stream:
            answer = await self._answer(tenant_id, asked, passages)
            yield AnswerDelta(answer.text)
            yield answer
            return
        await self._check_budget(tenant_id)
        call = self._call(tenant_id, question, generation)
        upstream: AnswerStream | None = None
        try:
            with call.active():
                upstream = await self._answerer.stream(question, passages, generation)
            async for delta in upstream:
                call.first_token()
                yield AnswerDelta(delta)
        except BaseException as exc:
            call.fail(exc)
            raise
        finally:
            if upstream is not None:
                # Shielded: when the client went away this runs cancelled, yet the upstream call must close.
                with anyio.CancelScope(shield=True):
                    await upstream.aclose()
                    if upstream.result is not None:
                        await self._spend(tenant_id, upstream.result)
                if upstream.result is not None:
                    self._describe(call, upstream.result)
                    self._assess(call, tenant_id, asked, upstream.result, passages)
            call.end()
        if upstream.result is not None:
            yield upstream.result

    async def _answer(self, tenant_id: str, asked: Question, passages: Sequence[Passage]) -> Answer:
        await self._check_budget(tenant_id)
        with self._call(tenant_id, asked.text, asked.generation) as call:
            answer = await self._answerer.answer(asked.text, passages, asked.generation)
            call.first_token()
            self._describe(call, answer)
            self._assess(call, tenant_id, asked, answer, passages)
        await self._spend(tenant_id, answer)
        return answer

    async def _check_budget(self, tenant_id: str) -> None:
        """Refuse the call (429 ``budget-exceeded``) before it is made, once the tenant's day's tokens are spent."""
        if self._budgets is not None:
            await self._budgets.check(tenant_id)

    async def _spend(self, tenant_id: str, answer: Answer) -> None:
        if self._budgets is not None:
            await self._budgets.spend(tenant_id, answer.input_tokens + answer.output_tokens)

    def _assess(
        self, call: GenAICall, tenant_id: str, asked: Question, answer: Answer, passages: Sequence[Passage]
    ) -> None:
        quality = assess(answer.text, passages)
        record_answer_quality(
            self._telemetry,
            call.span,
            tenant_id,
            outcome=quality.outcome,
            top_score=quality.top_score,
            groundedness=quality.groundedness,
            citation_coverage=quality.citation_coverage,
            synthetic=asked.probe,
            response_id=answer.response_id,
        )

    def _call(self, tenant_id: str, question: str, generation: Generation, *, step: str | None = None) -> GenAICall:
        """The GenAI span of one call (``step``: what it is for, when it is not the answer), with the options
        the answerer really asks for."""
        answerer = self._answerer
        request: dict[str, float | int | str] = {"rag.llm.step": step} if step else {}
        sent = answerer.effective(generation)
        if sent.max_tokens is not None:
            request["gen_ai.request.max_tokens"] = sent.max_tokens
        if sent.temperature is not None:
            request["gen_ai.request.temperature"] = sent.temperature
        return GenAICall(
            self._telemetry,
            "chat",
            answerer.provider,
            answerer.model,
            tenant_id=tenant_id,
            remote=is_remote(answerer),
            input_text=question,
            request=request,
        )

    def _describe(self, call: GenAICall, answer: Answer) -> None:
        call.response_model = answer.model
        call.response_id = answer.response_id
        call.input_tokens = answer.input_tokens
        call.output_tokens = answer.output_tokens
        call.finish_reasons = [answer.finish_reason]
        call.output_text = answer.text
        call.cost_usd = self._prices.cost(self._answerer.model, answer.input_tokens, answer.output_tokens)


def _flight_key(lookup: Lookup) -> str:
    return f"{lookup.key}:{lookup.generation or ''}"
