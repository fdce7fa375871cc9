"""Chat: a grounded, cited answer to a question over one knowledge base, whole or streamed.

Both are one flow. A cached answer is served as it is; otherwise :meth:`Chat._compute` (check the knowledge
base, make a follow-up standalone, retrieve, call the answerer, cache the answer) is the one computation,
which the whole answer drains in a task of its own (so it completes and is cached even if the client goes
away) and the streamed answer forwards delta by delta (so a client that goes away stops the LLM call). A
question that names a conversation is read in its earlier turns, and its answer kept as the next turn.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import aclosing, contextmanager

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
from service.quality.answers import AnswerRef, AnswerRegistry
from service.singleflight import FlightAbandoned
from telemetry import Telemetry, answer_span_id, count_answer, update_request

__all__ = ["Chat"]


class Chat:
    def __init__(
        self,
        knowledge_bases: KnowledgeBases,
        retriever: Retriever,
        answering: Answering,
        conversations: Conversations,
        *,
        answers: AnswerRegistry,
        telemetry: Telemetry,
        default_top_k: int,
    ) -> None:
        self._knowledge_bases = knowledge_bases
        self._retriever = retriever
        self._answering = answering
        self._conversations = conversations
        self._answers = answers
        self._telemetry = telemetry
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
        with self._counted(principal, question):
            if question.probe:  # afresh, alone: never the cache, never another request's computation
                record, cached = await self._drained(principal, question, None), False
                return record.response(cached=False)
            lookup = await self._lookup(principal, question, prefetched)
            if lookup.value is not None:
                record, cached = decode_record(lookup.value), True
            else:
                record = await self._answering.shared(lookup, lambda: self._drained(principal, question, lookup))
                cached = False
            response = record.response(cached=cached, conversation_id=question.conversation_id)
            await self._served(principal, question, record, response.trace_id)
        return response

    async def events(
        self, principal: Principal, question: Question, prefetched: Sequence[bytes | None] | None = None
    ) -> AsyncGenerator[AnswerDelta | AnswerDone, None]:
        """Deltas of the answer, then one :class:`AnswerDone`; closing the iterator stops the LLM call.

        A cached answer, or one that an identical request is computing already, arrives as a single delta.
        """
        with self._counted(principal, question):
            async for event in self._events(principal, question, prefetched):
                yield event

    async def _events(
        self, principal: Principal, question: Question, prefetched: Sequence[bytes | None] | None
    ) -> AsyncGenerator[AnswerDelta | AnswerDone, None]:
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
        await self._served(principal, question, record, done.trace_id)
        return done

    @contextmanager
    def _counted(self, principal: Principal, question: Question) -> Iterator[None]:
        """Count a failure of the service's own (a 5xx) as an answer with outcome ``error``."""
        try:
            yield
        except Exception as exc:
            if not question.probe and getattr(exc, "status", 500) >= 500:
                count_answer(self._telemetry, principal.tenant_id, question.kb_id, "error")
            raise

    async def _served(self, principal: Principal, question: Question, record: AnswerRecord, trace_id: str) -> None:
        """An answer was served: counted (never a probe's), remembered for feedback on its trace, and kept as
        the next turn of the conversation the question names, if any."""
        if not question.probe:
            outcome = "answered" if record.citations else "no_answer"
            count_answer(self._telemetry, principal.tenant_id, question.kb_id, outcome)
            self._answers.remember(
                trace_id, AnswerRef(principal.tenant_id, question.kb_id, principal.user_id, answer_span_id())
            )
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

    async def _drained(self, principal: Principal, question: Question, lookup: Lookup | None) -> AnswerRecord:
        """The answer :meth:`_compute` makes, asked of the answerer whole."""
        record: AnswerRecord | None = None
        async for event in self._compute(principal, question, lookup, stream=False):
            if isinstance(event, AnswerRecord):
                record = event
        if record is None:  # only a stream closed early ends without its record, and this one is drained
            raise RuntimeError("the answer computation ended without an answer")
        return record

    async def _compute(
        self, principal: Principal, question: Question, lookup: Lookup | None, *, stream: bool
    ) -> AsyncGenerator[AnswerDelta | AnswerRecord, None]:
        """Deltas as the answerer makes them, then the whole answer (cached, unless there is no ``lookup``),
        unless the stream ends early."""
        tenant_id = principal.tenant_id
        # The knowledge base is checked before a generation is started for it, so unknown ids leave no key.
        await self._knowledge_bases.searchable(principal, question.kb_id)
        generation = await self._answering.generation(lookup) if lookup is not None else None
        asked = await self._answering.standalone(tenant_id, question)
        passages = await self._retriever.retrieve(
            tenant_id, asked.kb_id, asked.text, asked.top_k, generation, context=asked.context
        )
        answer: Answer | None = None
        if not passages:
            answer = self._answering.no_answer()
            yield AnswerDelta(answer.text)
        else:
            llm = self._answering.generate(tenant_id, asked, passages, stream=stream)
            async with aclosing(llm) as deltas:
                async for item in deltas:
                    if isinstance(item, Answer):
                        answer = item
                    else:
                        yield item
        if answer is None:
            return
        record = AnswerRecord.of(answer, passages)
        if lookup is not None:
            await self._answering.keep(lookup, record, generation)
        yield record
