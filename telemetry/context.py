"""The current request's context, read by log records and filled in as the request is understood."""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Span, get_current_span

__all__ = [
    "RequestContext",
    "answer_span_id",
    "current_request",
    "enter_request",
    "leave_request",
    "mark_answer_span",
    "update_request",
]


@dataclass
class RequestContext:
    method: str
    route: str
    server_span: Span | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    """``tenant_id``, ``user_id``, ``kb_id``, ``question_length``, ``cache``… as they become known."""
    answer_span_id: str | None = None
    """The span of the LLM call that made this request's answer, when it made one."""


_current: ContextVar[RequestContext | None] = ContextVar("ragwatch_request", default=None)


def enter_request(context: RequestContext) -> Token[RequestContext | None]:
    return _current.set(context)


def leave_request(token: Token[RequestContext | None]) -> None:
    _current.reset(token)


def current_request() -> RequestContext | None:
    return _current.get()


def update_request(**fields: Any) -> None:
    """Add fields to the request's log context, and the tenant, knowledge base, answer cache outcome and
    conversation to its server span."""
    context = _current.get()
    if context is None:
        return
    context.fields.update(fields)
    span = context.server_span
    if span is not None and span.is_recording():
        if "tenant_id" in fields:
            span.set_attribute("rag.tenant.id", fields["tenant_id"])
        if "kb_id" in fields:
            span.set_attribute("rag.kb.id", fields["kb_id"])
        if "cache" in fields:
            span.set_attribute("rag.cache.outcome", fields["cache"])
        if "conversation_id" in fields:
            span.set_attribute("gen_ai.conversation.id", fields["conversation_id"])


def mark_answer_span(span: Span) -> None:
    """``span`` made the request's answer: feedback on the answer is emitted in it."""
    context = _current.get()
    if context is not None:
        context.answer_span_id = format(span.get_span_context().span_id, "016x")


def answer_span_id() -> str:
    """The span that made the request's answer, else the request's server span (a cached answer), else the
    current span, as 16 hex digits."""
    context = _current.get()
    if context is not None and context.answer_span_id is not None:
        return context.answer_span_id
    span = context.server_span if context is not None and context.server_span is not None else get_current_span()
    return format(span.get_span_context().span_id, "016x")
