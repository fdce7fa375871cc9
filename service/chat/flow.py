"""Chat: a grounded, cited answer to a question over one knowledge base, whole or streamed.

Both are one flow. A cached answer is served as it is; otherwise :meth:`Chat._compute` (check the knowledge
base, make a follow-up standalone, retrieve, call the answerer, cache the answer) is the one computation,
which the whole answer drains in a task of its own (so it completes and is cached even if the client goes
away) and the streamed answer forwards delta by delta (so a client that goes away stops the LLM call). A
question that names a conversation is read in its earlier turns, and its answer kept as the next turn.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing

from service.auth import Principal
from service.cache import Lookup
from service.chat.answering import Answering
from service.chat.answers import AnswerDelta, AnswerDone, AnswerRecord, decode_record
from service.chat.question import Question
from service.chat.retriever import Retriever
from service.conversations import Conversations
from service.knowledge_bases import KnowledgeBases
from service.models import ChatRequest, ChatResponse
from service.providers import Answer
from service.singleflight import FlightAbandoned
from telemetry import update_request

__all__ = ["Chat"]


class Chat:
    def __init__(
        self,
        knowledge_bases: KnowledgeBases,
        retriever: Retriever,
        answering: Answering,
        conversations: Conversations,
        *,
        default_top_k: int,
    ) -> None:
        self._knowledge_bases = knowledge_bases
        self._retriever = retriever
        self._answering = answering
        self._conversations = conversations
        self.default_top_k = default_top_k

    async def question(self, principal: Principal, request: ChatRequest) -> Question:
        """The question ``request`` asks, read in its conversation's earlier questions when it names one."""
        if request.conversation_id is None:
            return Question.of(request, self.default_top_k)
        update_request(conversation_id=request.conversation_id)
        context = await self._conversations.context(principal, request.conversation_id)
        return Question.of(request, self.default_top_k, context)

    def read_keys(self, principal: Principal, question: Question) -> list[str]:
        """The keys the answer cache reads for this question, for the rate limiter to read in its round trip."""
        return self._answering.read_keys(principal.tenant_id, question)

    async def answer(
        self, principal: Principal, question: Question, prefetched: Sequence[bytes | None] | None = None
    ) -> ChatResponse:
        """The whole answer. ``prefetched``: the values of :meth:`read_keys`, when the rate limiter read them."""
        lookup = await self._lookup(principal, question, prefetched)
        if lookup.value is not None:
            record, cached = decode_record(lookup.value), True
        else:
            record = await self._answering.shared(lookup, lambda: self._drained(principal, question, lookup))
            cached = False
        response = record.response(cached=cached, conversation_id=question.conversation_id)
        await self._keep_turn(principal, question, record, response.trace_id)
        return response

    async def events(
        self, principal: Principal, question: Question, prefetched: Sequence[bytes | None] | None = None
    ) -> AsyncGenerator[AnswerDelta | AnswerDone, None]:
        """Deltas of the answer, then one :class:`AnswerDone`; closing the iterator stops the LLM call.

        A cached answer, or one that an identical request is computing already, arrives as a single delta.
        """
        lookup = await self._lookup(principal, question, prefetched)
        if lookup.value is not None:
            record = decode_record(lookup.value)
            yield AnswerDelta(record.answer)
            yield await self._done(principal, question, record, cached=True)
            return
        flight = self._answering.claim(lookup)
        if flight is None:
            record = await self._answering.shared(lookup, lambda: self._drained(principal, question, lookup))
            yield AnswerDelta(record.answer)
            yield await self._done(principal, question, record, cached=False)
            return
        outcome: AnswerRecord | BaseException = FlightAbandoned()
        try:
            async with aclosing(self._compute(principal, question, lookup, stream=True)) as computation:
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
            yield await self._done(principal, question, outcome, cached=False)

    async def _done(
        self, principal: Principal, question: Question, record: AnswerRecord, *, cached: bool
    ) -> AnswerDone:
        """The closing event of a streamed answer, once its turn is kept."""
        done = record.done(cached=cached, conversation_id=question.conversation_id)
        await self._keep_turn(principal, question, record, done.trace_id)
        return done

    async def _keep_turn(self, principal: Principal, question: Question, record: AnswerRecord, trace_id: str) -> None:
        """Keep the question and its answer as the next turn of the conversation the question names, if any."""
        if question.conversation_id is not None:
            await self._conversations.record(
                principal,
                question.conversation_id,
                question=question.text,
                answer=record.answer,
                citations=record.citations,
                trace_id=trace_id,
            )

    async def _lookup(
        self, principal: Principal, question: Question, prefetched: Sequence[bytes | None] | None
    ) -> Lookup:
        update_request(kb_id=question.kb_id, question_length=len(question.text))
        return await self._answering.lookup(principal.tenant_id, question, prefetched)

    async def _drained(self, principal: Principal, question: Question, lookup: Lookup) -> AnswerRecord:
        """The answer :meth:`_compute` makes, asked of the answerer whole."""
        record: AnswerRecord | None = None
        async for event in self._compute(principal, question, lookup, stream=False):
            if isinstance(event, AnswerRecord):
                record = event
        if record is None:  # only a stream closed early ends without its record, and this one is drained
            raise RuntimeError("the answer computation ended without an answer")
        return record

    async def _compute(
        self, principal: Principal, question: Question, lookup: Lookup, *, stream: bool
    ) -> AsyncGenerator[AnswerDelta | AnswerRecord, None]:
        """Deltas as the answerer makes them, then the whole answer (cached), unless the stream ends early."""
        tenant_id = principal.tenant_id
        # The knowledge base is checked before a generation is started for it, so unknown ids leave no key.
        await self._knowledge_bases.searchable(principal, question.kb_id)
        generation = await self._answering.generation(lookup)
        asked = await self._answering.standalone(tenant_id, question)
        passages = await self._retriever.retrieve(
            tenant_id, asked.kb_id, asked.text, asked.top_k, generation, context=asked.context
        )
        answer: Answer | None = None
        if not passages:
            answer = self._answering.no_answer()
            yield AnswerDelta(answer.text)
        else:
            llm = self._answering.generate(tenant_id, asked.text, passages, stream=stream, generation=asked.generation)
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
