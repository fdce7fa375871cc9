"""What a Chat Completions request hands retrieval as its question and its context."""

from __future__ import annotations

from typing import Any

import msgspec

from service.openai_compat.completions import CONTEXT_CHARACTERS, CONTEXT_TURNS, Completions
from service.openai_compat.shapes import CompletionRequest


def _request(*messages: tuple[str, str]) -> CompletionRequest:
    return msgspec.convert(
        {"model": "kb_1", "messages": [{"role": role, "content": text} for role, text in messages]}, CompletionRequest
    )


def completions() -> Completions:
    unused: Any = None  # neither the knowledge bases nor the chat are reached by these two methods
    return Completions(unused, unused, sources=True)


def test_the_question_is_the_last_user_message_and_never_its_own_context() -> None:
    body = _request(("user", "What does UNESCO do?"), ("user", "Where is it?"), ("assistant", "In Paris."))

    assert completions().chat_request(body).question == "Where is it?"
    assert completions().context(body) == ["What does UNESCO do?"]


def test_the_context_is_the_last_few_earlier_user_messages_each_cut_short() -> None:
    earlier = [("user", f"question {n} " + "x" * 5000) for n in range(5)]
    body = _request(*earlier, ("system", "Be brief."), ("user", "And then?"))

    context = completions().context(body)

    assert len(context) == CONTEXT_TURNS
    assert [turn.split()[1] for turn in context] == ["2", "3", "4"]
    assert all(len(turn) == CONTEXT_CHARACTERS for turn in context)


def test_a_lone_question_has_no_context() -> None:
    assert completions().context(_request(("system", "Be brief."), ("user", "Hello there?"))) == []
