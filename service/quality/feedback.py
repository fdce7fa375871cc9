"""``POST /v1/feedback``: a thumbs up or down on an answer, named by its trace id.

The feedback is checked against the answer it names (:mod:`~service.quality.answers`): another tenant's
answer, or one the service does not know (never answered, or older than ``RAGWATCH_FEEDBACK_TTL_S``), is a
404. Accepted feedback is stored in LanceDB's ``feedback`` table with its comment, counted in
``rag_answer_feedback_total``, and emitted in the answer's own trace (:func:`telemetry.record_feedback`).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from service.auth import Principal
from service.errors import NotFound, SharedStateUnavailable
from service.models import FeedbackAccepted, FeedbackCreate
from service.quality.answers import AnswerRegistry
from service.shared.health import RedisUnavailable
from service.shared.records import Records, record_key
from service.store import Store, now
from service.store.writes import retried
from telemetry import Telemetry, record_feedback

__all__ = ["FEEDBACK_SCHEMA", "FeedbackService"]

FEEDBACK_SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("kb_id", pa.string()),
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("answered_user_id", pa.string()),
        ("user_id", pa.string()),
        ("rating", pa.string()),
        ("comment", pa.string()),
        ("created_at", pa.string()),
    ]
)


class FeedbackService:
    def __init__(
        self, answers: AnswerRegistry, records: Records, store: Store, telemetry: Telemetry, *, ttl_s: int
    ) -> None:
        self._answers = answers
        self._records = records
        self._store = store
        self._telemetry = telemetry
        self._ttl_s = ttl_s
        self._table: Any = None

    async def give(self, principal: Principal, data: FeedbackCreate) -> FeedbackAccepted:
        try:
            answer = await self._answers.find(data.trace_id)
            if answer is None or answer.tenant_id != principal.tenant_id:
                raise NotFound(f"No answer with trace id {data.trace_id!r} in this tenant (or it is too old).")
            first = await self._first_rating(principal, data.trace_id)
        except RedisUnavailable:
            raise SharedStateUnavailable("Feedback cannot be matched to its answer while Redis is down.") from None
        created_at = now()
        row = {
            "tenant_id": answer.tenant_id,
            "kb_id": answer.kb_id,
            "trace_id": data.trace_id,
            "span_id": answer.span_id,
            "answered_user_id": answer.user_id,
            "user_id": principal.user_id,
            "rating": data.rating,
            "comment": data.comment,
            "created_at": created_at,
        }
        table = await self._feedback_table()
        await retried(lambda: table.add(pa.Table.from_pylist([row], schema=FEEDBACK_SCHEMA)))
        record_feedback(
            self._telemetry,
            trace_id=data.trace_id,
            span_id=answer.span_id,
            tenant_id=answer.tenant_id,
            kb_id=answer.kb_id,
            user_id=principal.user_id,
            rating=data.rating,
            comment=data.comment,
            counted=first,
        )
        return FeedbackAccepted(trace_id=data.trace_id, kb_id=answer.kb_id, rating=data.rating, created_at=created_at)

    async def _first_rating(self, principal: Principal, trace_id: str) -> bool:
        """Whether this is the caller's first rating of the answer: only that one is counted, so rating an
        answer again (a changed mind) is stored but cannot tip the share of "down" ratings."""
        key = record_key("rated", principal.tenant_id, principal.user_id, trace_id)
        return await self._records.claim("answers", key, b"1", self._ttl_s) is None

    async def _feedback_table(self) -> Any:
        if self._table is None:
            self._table = await self._store.table("feedback", FEEDBACK_SCHEMA)
        return self._table
