"""Chat: a grounded, cited answer to a question over one knowledge base, whole or streamed.

Both are one flow. A cached answer is served as it is; otherwise :meth:`Chat._compute` (check the knowledge
base, retrieve, call the answerer, cache the answer) is the one computation, which the whole answer drains in
a task of its own (so it completes and is cached even if the client goes away) and the streamed answer
forwards delta by delta (so a client that goes away stops the LLM call).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing

from service.auth import Principal
from service.cache import Lookup
from service.chat.answering import Answering
from service.chat.answers import AnswerDelta, AnswerDone, AnswerRecord, decode_record
from service.chat.retriever import Retriever
from service.knowledge_bases import KnowledgeBases
from service.models import ChatRequest, ChatResponse
from service.providers import Answer
from service.singleflight import FlightAbandoned
from telemetry import update_request

__all__ = ["Chat"]


class Chat:
    def __init__(
        self, knowledge_bases: KnowledgeBases, retriever: Retriever, answering: Answering, *, default_top_k: int
    ) -> None:
        self._knowledge_bases = knowledge_bases
        self._retriever = retriever
        self._answering = answering
        self._default_top_k = default_top_k

    def read_keys(self, principal: Principal, request: ChatRequest, context: Sequence[str] = ()) -> list[str]:
        """The keys the answer cache reads for this question, for the rate limiter to read in its round trip."""
        return self._answering.read_keys(
            principal.tenant_id, request.kb_id, request.question, self._top_k(request), context
        )

    async def answer(
        self,
        principal: Principal,
        request: ChatRequest,
        prefetched: Sequence[bytes | None] | None = None,
        context: Sequence[str] = (),
    ) -> ChatResponse:
        """The whole answer. ``prefetched``: the values of :meth:`read_keys`, when the rate limiter read them;
        ``context``: the conversation's earlier questions, oldest first, which retrieval takes into account."""
        lookup = await self._lookup(principal, request, prefetched, context)
        if lookup.value is not None:
            return decode_record(lookup.value).response(cached=True)
        record = await self._answering.shared(lookup, lambda: self._drained(principal, request, lookup, context))
        return record.response(cached=False)

    async def events(
        self,
        principal: Principal,
        request: ChatRequest,
        prefetched: Sequence[bytes | None] | None = None,
        context: Sequence[str] = (),
    ) -> AsyncGenerator[AnswerDelta | AnswerDone, None]:
        """Deltas of the answer, then one :class:`AnswerDone`; closing the iterator stops the LLM call.

        A cached answer, or one that an identical request is computing already, arrives as a single delta.
        """
        lookup = await self._lookup(principal, request, prefetched, context)
        if lookup.value is not None:
            record = decode_record(lookup.value)
            yield AnswerDelta(record.answer)
            yield record.done(cached=True)
            return
        flight = self._answering.claim(lookup)
        if flight is None:
            record = await self._answering.shared(lookup, lambda: self._drained(principal, request, lookup, context))
            yield AnswerDelta(record.answer)
            yield record.done(cached=False)
            return
        outcome: AnswerRecord | BaseException = FlightAbandoned()
        try:
            async with aclosing(self._compute(principal, request, lookup, context, stream=True)) as computation:
                async for event in computation:
                    if isinstance(event, AnswerRecord):
                        outcome = event
                    else:
                        yield event
        except Exception as exc:
            outcome = exc
            raise
        finally:
            # Those waiting for this answer get it, or this request's error, or compute it themselves.
            if isinstance(outcome, AnswerRecord):
                flight.set_result(outcome)
            else:
                flight.set_exception(outcome)
        if isinstance(outcome, AnswerRecord):
            yield outcome.done(cached=False)

    async def _lookup(
        self,
        principal: Principal,
        request: ChatRequest,
        prefetched: Sequence[bytes | None] | None,
        context: Sequence[str],
    ) -> Lookup:
        update_request(kb_id=request.kb_id, question_length=len(request.question))
        return await self._answering.lookup(
            principal.tenant_id, request.kb_id, request.question, self._top_k(request), prefetched, context=context
        )

    async def _drained(
        self, principal: Principal, request: ChatRequest, lookup: Lookup, context: Sequence[str]
    ) -> AnswerRecord:
        """The answer :meth:`_compute` makes, asked of the answerer whole."""
        record: AnswerRecord | None = None
        async for event in self._compute(principal, request, lookup, context, stream=False):
            if isinstance(event, AnswerRecord):
                record = event
        if record is None:  # only a stream closed early ends without its record, and this one is drained
            raise RuntimeError("the answer computation ended without an answer")
        return record

    async def _compute(
        self, principal: Principal, request: ChatRequest, lookup: Lookup, context: Sequence[str], *, stream: bool
    ) -> AsyncGenerator[AnswerDelta | AnswerRecord, None]:
        """Deltas as the answerer makes them, then the whole answer (cached), unless the stream ends early."""
        # The knowledge base is checked before a generation is started for it, so unknown ids leave no key.
        await self._knowledge_bases.searchable(principal, request.kb_id)
        generation = await self._answering.generation(lookup)
        passages = await self._retriever.retrieve(
            principal.tenant_id, request.kb_id, request.question, self._top_k(request), generation, context=context
        )
        answer: Answer | None = None
        if not passages:
            answer = self._answering.no_answer()
            yield AnswerDelta(answer.text)
        else:
            llm = self._answering.generate(principal.tenant_id, request.question, passages, stream=stream)
            async with aclosing(llm) as deltas:
                async for item in deltas:
                    if isinstance(item, Answer):
                        answer = item
                    else:
                        yield item
        if answer is None:
            return
        record = AnswerRecord.of(answer, passages)
        await self._answering.keep(lookup, record, generation)
        yield record

    def _top_k(self, request: ChatRequest) -> int:
        return request.top_k or self._default_top_k
