"""``POST /v1/chat`` as Server-Sent Events: ``delta`` events, then exactly one ``done`` (or one ``error``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.providers import NO_ANSWER
from tests.fake_openai import CHAT, FAKE_MODEL, FakeOpenAI, fake_openai, openai_env
from tests.support import HANDBOOK, PROBLEM_BASE, auth, create_kb, ingest, live_server, make_settings

__all__ = ["fake_openai"]  # the fixture, imported for pytest

QUESTION = "How many days of paid vacation does an employee get, and when do they expire?"
LONG_ANSWER = " ".join(f"word{n}" for n in range(60)) + " [1]."


@dataclass(frozen=True)
class Event:
    name: str
    data: Any


def parse_sse(lines: Iterable[str]) -> Iterator[Event]:
    """Events of a ``text/event-stream`` body, with their ``data`` decoded as JSON."""
    name, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield Event(name, json.loads("\n".join(data)))
            name, data = "message", list[str]()
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
    if data:
        yield Event(name, json.loads("\n".join(data)))


def _events(response: httpx.Response) -> list[Event]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return list(parse_sse(response.text.splitlines()))


def _assert_well_formed(events: list[Event]) -> tuple[str, dict[str, Any]]:
    """Deltas then exactly one ``done``, last; the joined answer and the ``done`` payload."""
    names = [event.name for event in events]
    assert names.count("done") == 1, names
    assert names[-1] == "done", names
    assert set(names[:-1]) == {"delta"}, names
    for event in events[:-1]:
        assert set(event.data) == {"text"}
    done = events[-1].data
    assert set(done) == {"citations", "model", "usage", "trace_id", "cached", "finish_reason", "conversation_id"}
    return "".join(event.data["text"] for event in events[:-1]), done


# --- the offline default ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        pytest.param({"stream": True}, {}, id="stream-true"),
        pytest.param({}, {"Accept": "text/event-stream"}, id="accept-header"),
    ],
)
def test_a_streamed_answer_is_the_same_answer_in_delta_events_then_one_done(
    admin: httpx.Client, kb_id: str, body: dict[str, Any], headers: dict[str, str]
) -> None:
    ingest(admin, kb_id, title="Handbook", text=HANDBOOK)

    response = admin.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION, **body}, headers=headers)
    whole = admin.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION}).json()

    events = _events(response)
    assert response.headers["cache-control"] == "no-cache"
    answer, done = _assert_well_formed(events)
    assert len(events) > 3  # word by word, not one lump
    assert answer == whole["answer"]
    assert "twenty-five days" in answer
    assert done["citations"] == whole["citations"]
    assert done["model"] == "extractive"
    assert done["usage"] == whole["usage"]
    assert len(done["trace_id"]) == 32


def test_a_streamed_question_the_knowledge_base_does_not_cover_gets_the_fixed_answer(
    admin: httpx.Client, kb_id: str
) -> None:
    ingest(admin, kb_id, title="Handbook", text=HANDBOOK)

    response = admin.post("/v1/chat", json={"kb_id": kb_id, "question": "Which rocket engine powers Saturn?"})
    streamed = admin.post(
        "/v1/chat", json={"kb_id": kb_id, "question": "Which rocket engine powers Saturn?", "stream": True}
    )

    assert response.json()["answer"] == NO_ANSWER
    answer, done = _assert_well_formed(_events(streamed))
    assert answer == NO_ANSWER
    assert done["citations"] == []


def test_a_stream_that_cannot_start_is_an_ordinary_problem_response(admin: httpx.Client) -> None:
    response = admin.post("/v1/chat", json={"kb_id": "kb_missing", "question": QUESTION, "stream": True})

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == PROBLEM_BASE + "not-found"


# --- through the OpenAI-compatible provider ---------------------------------------------------------------


@contextmanager
def ragwatch(data_dir: Path, fake: FakeOpenAI, **env: str) -> Iterator[tuple[httpx.Client, str]]:
    """A ragwatch server backed by ``fake``, a client of tenant ``acme``, and a knowledge base with the handbook."""
    with (
        live_server(make_settings(data_dir, **openai_env(fake.base_url, **env))) as server,
        server.client(auth()) as client,
    ):
        kb_id = create_kb(client, "handbook")
        ingest(client, kb_id, title="Handbook", text=HANDBOOK)
        yield client, kb_id


def test_a_streamed_llm_answer_relays_the_providers_deltas_model_and_usage(
    fake_openai: FakeOpenAI, data_dir: Path
) -> None:
    fake_openai.answer = "Employees get twenty-five days [1], which expire at the end of March [1]."

    with ragwatch(data_dir, fake_openai) as (client, kb_id):
        response = client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION, "stream": True})

    answer, done = _assert_well_formed(_events(response))
    assert answer == fake_openai.answer
    assert done["model"] == FAKE_MODEL
    assert done["usage"] == {"input_tokens": fake_openai.prompt_tokens, "output_tokens": fake_openai.completion_tokens}
    assert done["citations"][0]["title"] == "Handbook"
    [call] = fake_openai.calls(CHAT)
    assert call.body["stream"] is True
    assert call.body["stream_options"] == {"include_usage": True}
    assert "twenty-five days of paid vacation" in call.body["messages"][1]["content"]
    [stream] = fake_openai.wait_for_streams(1)
    assert stream.completed


def test_a_client_that_disconnects_mid_stream_cancels_the_llm_call(fake_openai: FakeOpenAI, data_dir: Path) -> None:
    fake_openai.answer = LONG_ANSWER
    fake_openai.chunk_delay_s = 0.1  # about 6 s for the whole answer

    with ragwatch(data_dir, fake_openai) as (client, kb_id):
        request = {"kb_id": kb_id, "question": QUESTION, "stream": True}
        with client.stream("POST", "/v1/chat", json=request) as response:
            assert response.status_code == 200
            events = parse_sse(response.iter_lines())
            first_two = [next(events), next(events)]
            assert [event.name for event in first_two] == ["delta", "delta"]
        hung_up = time.monotonic()

        [stream] = fake_openai.wait_for_streams(1, timeout_s=4)
        noticed = time.monotonic() - hung_up

        # The server is still healthy and answers the next question in full.
        fake_openai.chunk_delay_s = 0
        after = client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION})

    assert stream.client_disconnected
    assert not stream.completed
    assert stream.chunks_sent < stream.chunks_planned
    assert noticed < 2
    assert after.status_code == 200, after.text
    assert after.json()["answer"] == LONG_ANSWER


@pytest.mark.parametrize(
    ("knob", "slug"),
    [
        pytest.param("stall_after_chunks", "llm-provider-timeout", id="stalls"),
        pytest.param("cut_after_chunks", "llm-provider-unavailable", id="connection-dropped"),
        pytest.param("malformed_after_chunks", "llm-provider-error", id="not-json"),
    ],
)
def test_a_provider_failure_after_the_first_delta_ends_the_stream_with_an_error_event(
    fake_openai: FakeOpenAI, data_dir: Path, knob: str, slug: str
) -> None:
    setattr(fake_openai, knob, 3)

    with ragwatch(data_dir, fake_openai, RAGWATCH_LLM_TIMEOUT_S="0.5") as (client, kb_id):
        response = client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION, "stream": True})

    events = _events(response)
    names = [event.name for event in events]
    assert names[0] == "delta"
    assert names[-1] == "error"
    assert names.count("error") == 1
    assert "done" not in names
    problem = events[-1].data
    assert problem["type"] == PROBLEM_BASE + slug
    assert problem["status"] in (502, 503, 504)
    assert problem["title"]
    assert problem["detail"]


def test_a_stream_whose_first_chunk_times_out_is_a_problem_not_a_stream(
    fake_openai: FakeOpenAI, data_dir: Path
) -> None:
    """The provider sends its headers, then nothing: no text was relayed yet, so the status can still say 504."""
    fake_openai.stall_after_chunks = 0

    with ragwatch(data_dir, fake_openai, RAGWATCH_LLM_TIMEOUT_S="0.5") as (client, kb_id):
        response = client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION, "stream": True})

    assert response.status_code == 504, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == PROBLEM_BASE + "llm-provider-timeout"
