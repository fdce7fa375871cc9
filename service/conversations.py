"""Conversations: the turns of a chat kept by the service, so a follow-up is asked in its context.

A conversation belongs to one user of one tenant: its key is derived from the tenant, the user and the id the
client chose, so another user (or tenant) naming the same id finds nothing (404). It keeps its last
``RAGWATCH_CONVERSATION_MAX_TURNS`` turns and lives ``RAGWATCH_CONVERSATION_TTL_S`` after its last one, in
Redis when one is configured, so every replica sees the same turns.

When Redis is down, a chat is still answered: without the conversation's earlier turns, and without keeping
its own (logged); reading or deleting a conversation then is a 503.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import msgspec

from service.auth import Principal
from service.errors import NotFound, SharedStateUnavailable
from service.models import Conversation, ConversationTurn, Passage
from service.shared.health import RedisUnavailable
from service.shared.records import Records, record_key
from service.store import now

__all__ = ["CONTEXT_CHARACTERS", "CONTEXT_TURNS", "Conversations", "earlier_questions"]

logger = logging.getLogger("ragwatch.conversations")

CONTEXT_TURNS = 3
"""Earlier questions of a conversation that a follow-up is read in."""
CONTEXT_CHARACTERS = 4000
"""What of each earlier question is read (a question may be as long)."""

_OPERATION = "conversations"
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(ConversationTurn).decode


def earlier_questions(questions: Sequence[str]) -> tuple[str, ...]:
    """The questions a follow-up is read in: the last :data:`CONTEXT_TURNS` non-blank ones, oldest first, each
    cut to :data:`CONTEXT_CHARACTERS`."""
    kept = [question[:CONTEXT_CHARACTERS] for question in questions if question.strip()]
    return tuple(kept[-CONTEXT_TURNS:])


class Conversations:
    def __init__(self, records: Records, *, max_turns: int, ttl_s: int) -> None:
        self._records = records
        self._max_turns = max_turns
        self._ttl_s = ttl_s

    async def context(self, principal: Principal, conversation_id: str) -> tuple[str, ...]:
        """The conversation's earlier questions (:func:`earlier_questions`); none when Redis is down."""
        try:
            values = await self._records.values(_OPERATION, _key(principal, conversation_id))
        except RedisUnavailable:
            logger.warning("conversation %s answered without its earlier turns: Redis is down", conversation_id)
            return ()
        return earlier_questions([_decode(value).question for value in values])

    async def record(
        self,
        principal: Principal,
        conversation_id: str,
        *,
        question: str,
        answer: str,
        citations: list[Passage],
        trace_id: str,
    ) -> None:
        """Keep a turn (the oldest beyond the bound go); a turn that cannot be kept is logged, not raised."""
        turn = ConversationTurn(question, answer, citations, trace_id, created_at=now())
        key = _key(principal, conversation_id)
        try:
            await self._records.append(_OPERATION, key, _encode(turn), keep=self._max_turns, ttl_s=self._ttl_s)
        except RedisUnavailable:
            logger.warning("a turn of conversation %s was not kept: Redis is down", conversation_id)

    async def get(self, principal: Principal, conversation_id: str) -> Conversation:
        """The caller's conversation, oldest turn first (404 when it has none, or is not the caller's)."""
        try:
            values = await self._records.values(_OPERATION, _key(principal, conversation_id))
        except RedisUnavailable:
            raise SharedStateUnavailable("Conversations cannot be read while Redis is down.") from None
        if not values:
            raise NotFound(f"No conversation {conversation_id!r} for this user.")
        return Conversation(id=conversation_id, turns=[_decode(value) for value in values])

    async def delete(self, principal: Principal, conversation_id: str) -> None:
        """Forget the caller's conversation (404 when there is none)."""
        try:
            deleted = await self._records.delete(_OPERATION, _key(principal, conversation_id))
        except RedisUnavailable:
            raise SharedStateUnavailable("Conversations cannot be deleted while Redis is down.") from None
        if not deleted:
            raise NotFound(f"No conversation {conversation_id!r} for this user.")


def _key(principal: Principal, conversation_id: str) -> str:
    return record_key("conversation", principal.tenant_id, principal.user_id, conversation_id)
