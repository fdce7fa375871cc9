"""``/v1/conversations/{conversation_id}``: the caller's kept turns of a chat, read or forgotten."""

from __future__ import annotations

from litestar import Controller, delete, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from service.auth import Principal
from service.conversations import Conversations
from service.errors import problem_responses
from service.models import Conversation

__all__ = ["ConversationController"]

_ERRORS = problem_responses(401, 403, 404, 503)


class ConversationController(Controller):
    path = "/conversations/{conversation_id:str}"
    tags = ["chat"]

    @get(summary="A conversation's turns, oldest first (the caller's own only)", responses=_ERRORS)
    async def detail(
        self,
        conversation_id: FromPath[str],
        principal: NamedDependency[Principal],
        conversations: NamedDependency[Conversations],
    ) -> Conversation:
        return await conversations.get(principal, conversation_id)

    @delete(summary="Forget a conversation", responses=_ERRORS)
    async def remove(
        self,
        conversation_id: FromPath[str],
        principal: NamedDependency[Principal],
        conversations: NamedDependency[Conversations],
    ) -> None:
        await conversations.delete(principal, conversation_id)
