"""What a Chat Completions request asks: its question, the context it is read in, its generation options."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from service.chat import Chat
from service.conversations import CONTEXT_CHARACTERS, CONTEXT_TURNS
from service.errors import BadRequest
from service.openai_compat.completions import Completions
from service.openai_compat.shapes import CompletionRequest


def _request(*messages: tuple[str, str], **options: Any) -> CompletionRequest:
    body = {"model": "kb_1", "messages": [{"role": role, "content": text} for role, text in messages]}
    return msgspec.convert(body | options, CompletionRequest)


def completions() -> Completions:
    unused: Any = None  # the knowledge bases, retriever, answering and conversations are not reached here
    chat = Chat(unused, unused, unused, unused, answers=unused, telemetry=unused, default_top_k=5)
    return Completions(unused, chat, sources=True)


def test_the_question_is_the_last_user_message_and_never_its_own_context() -> None:
    body = _request(("user", "What does UNESCO do?"), ("user", "Where is it?"), ("assistant", "In Paris."))

    question = completions().question(body)

    assert question.text == "Where is it?"
    assert question.context == ("What does UNESCO do?",)
    assert (question.kb_id, question.top_k, question.conversation_id) == ("kb_1", 5, None)


def test_the_context_is_the_last_few_earlier_user_messages_each_cut_short() -> None:
    earlier = [("user", f"question {n} " + "x" * 5000) for n in range(5)]
    body = _request(*earlier, ("system", "Be brief."), ("user", "And then?"))

    context = completions().question(body).context

    assert len(context) == CONTEXT_TURNS
    assert [turn.split()[1] for turn in context] == ["2", "3", "4"]
    assert all(len(turn) == CONTEXT_CHARACTERS for turn in context)


def test_a_lone_question_has_no_context_and_default_generation() -> None:
    question = completions().question(_request(("system", "Be brief."), ("user", "Hello there?")))

    assert question.context == ()
    assert question.generation.key() == ""


def test_max_completion_tokens_wins_over_max_tokens_and_temperature_is_kept() -> None:
    body = _request(("user", "Why?"), max_tokens=50, max_completion_tokens=20, temperature=0.3)

    generation = completions().question(body).generation

    assert (generation.max_tokens, generation.temperature) == (20, 0.3)
    assert generation.key() != ""


def test_a_completion_without_a_user_message_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        completions().question(_request(("system", "Be brief.")))
