"""The OpenAI-compatible routes, driven by the real ``openai`` SDK pointed at the running service: models are the
tenant's knowledge bases, completions are grounded answers with their sources, errors are the SDK's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fake_openai import CHAT, FakeOpenAI, fake_openai, openai_env
from tests.support import HANDBOOK, LiveServer, auth, create_kb, ingest, live_server, make_settings, token

__all__ = ["fake_openai"]  # the fixture, imported for pytest

QUESTION = "How many days of paid vacation does an employee get?"


def sdk(server: LiveServer, bearer: str | None = None) -> openai.OpenAI:
    """The ``openai`` client as any user of it would point it at ragwatch; no retries, so errors show at once."""
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=bearer or token(), max_retries=0)


@pytest.fixture
def handbook(admin: httpx.Client) -> str:
    kb_id = create_kb(admin, "handbook")
    ingest(admin, kb_id, title="Handbook", text=HANDBOOK)
    return kb_id


@pytest.fixture
def client(server: LiveServer) -> Iterator[openai.OpenAI]:
    with sdk(server) as made:
        yield made


def test_models_are_the_tenants_knowledge_bases(server: LiveServer, client: openai.OpenAI, handbook: str) -> None:
    with sdk(server, token(tenant="globex")) as other:
        foreign = [model.id for model in other.models.list()]

    models = client.models.list()

    mine = {model.id: model for model in models}
    assert handbook in mine
    assert mine[handbook].object == "model"
    assert mine[handbook].owned_by == "acme"
    assert mine[handbook].created > 1_700_000_000
    assert handbook not in foreign


def test_a_completion_is_the_grounded_answer_with_its_sources_in_the_text(
    client: openai.OpenAI, admin: httpx.Client, handbook: str
) -> None:
    expected = admin.post("/v1/chat", json={"kb_id": handbook, "question": QUESTION}).json()

    raw = client.chat.completions.with_raw_response.create(
        model=handbook, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}]
    )
    completion = raw.parse()

    assert completion.object == "chat.completion"
    assert completion.model == handbook
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == expected["answer"] + "\n\nSources:\n[1] Handbook"
    assert completion.usage is not None
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    extra = completion.model_extra or {}
    assert [c["document_id"] for c in extra["citations"]] == [c["document_id"] for c in expected["citations"]]
    assert extra["trace_id"] in raw.headers["traceresponse"]
    assert completion.id == f"chatcmpl-{extra['trace_id']}"


def test_a_streamed_completion_is_chunks_ending_with_usage_then_done(client: openai.OpenAI, handbook: str) -> None:
    whole = client.chat.completions.create(model=handbook, messages=[{"role": "user", "content": QUESTION}])

    stream = client.chat.completions.create(
        model=handbook,
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    with_choices = [chunk for chunk in chunks if chunk.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in with_choices)
    assert text == whole.choices[0].message.content
    closing = with_choices[-1]
    assert closing.choices[0].finish_reason == "stop"
    assert (closing.model_extra or {})["citations"][0]["title"] == "Handbook"
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.total_tokens > 0


def test_a_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI, handbook: str) -> None:
    chunks = list(
        client.chat.completions.create(model=handbook, messages=[{"role": "user", "content": QUESTION}], stream=True)
    )

    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)


def test_the_stream_ends_with_done(server: LiveServer, handbook: str) -> None:
    body = {"model": handbook, "messages": [{"role": "user", "content": QUESTION}], "stream": True}
    with server.client(auth()) as raw:
        reply = raw.post("/v1/chat/completions", json=body)

    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    data = [line.removeprefix("data: ") for line in reply.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"


def test_the_sources_list_can_be_turned_off(tmp_path: Path) -> None:
    with live_server(make_settings(tmp_path, RAGWATCH_OPENAI_SOURCES="false")) as server:
        with server.client(auth()) as admin:
            kb_id = create_kb(admin, "handbook")
            ingest(admin, kb_id, title="Handbook", text=HANDBOOK)
        with sdk(server) as client:
            completion = client.chat.completions.create(model=kb_id, messages=[{"role": "user", "content": QUESTION}])

    content = completion.choices[0].message.content or ""
    assert "Sources:" not in content
    assert "[1]" in content  # the markers stay: they point into the citations array


# --- errors, as the SDK raises them ------------------------------------------------------------------------


def test_a_bad_token_is_the_sdks_authentication_error(server: LiveServer, handbook: str) -> None:
    with sdk(server, "not-a-token") as client, pytest.raises(openai.AuthenticationError) as raised:
        client.chat.completions.create(model=handbook, messages=[{"role": "user", "content": QUESTION}])

    assert raised.value.status_code == 401
    assert raised.value.response.headers["www-authenticate"].startswith("Bearer")
    assert raised.value.code == "unauthenticated"
    assert raised.value.type == "authentication_error"


def test_a_token_without_the_member_role_is_the_sdks_permission_error(server: LiveServer, handbook: str) -> None:
    with sdk(server, token(roles=("auditor",))) as client, pytest.raises(openai.PermissionDeniedError) as raised:
        client.chat.completions.create(model=handbook, messages=[{"role": "user", "content": QUESTION}])

    assert raised.value.status_code == 403


@pytest.mark.parametrize("tenant", ["acme", "globex"])
def test_an_unknown_or_foreign_knowledge_base_is_the_sdks_not_found(
    server: LiveServer, handbook: str, tenant: str
) -> None:
    model = "kb_unknown" if tenant == "acme" else handbook
    with sdk(server, token(tenant=tenant)) as client, pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}])

    assert raised.value.code == "not-found"
    assert raised.value.type == "not_found_error"


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "system", "content": "No question here."}],
        [{"role": "user", "content": "   "}],
    ],
)
def test_a_request_without_a_question_is_the_sdks_bad_request(
    client: openai.OpenAI, handbook: str, messages: list[dict[str, str]]
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=handbook, messages=messages)  # type: ignore[arg-type]

    assert raised.value.code == "invalid-request"
    assert raised.value.type == "invalid_request_error"


def test_a_malformed_body_is_the_sdks_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="kb", messages=[])

    assert raised.value.status_code == 400


def test_a_rate_limit_is_the_sdks_rate_limit_error_with_retry_after(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, RAGWATCH_RATE_LIMIT_PER_MINUTE="1")
    with live_server(settings) as server:
        with server.client(auth()) as admin:
            kb_id = create_kb(admin, "handbook")
        with sdk(server) as client:
            client.chat.completions.create(model=kb_id, messages=[{"role": "user", "content": "Anything?"}])
            with pytest.raises(openai.RateLimitError) as raised:
                client.chat.completions.create(model=kb_id, messages=[{"role": "user", "content": "Anything?"}])

    assert raised.value.code == "rate-limited"
    assert int(raised.value.response.headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    ("status", "exception", "code"),
    [
        (500, openai.InternalServerError, "llm-provider-error"),
        (429, openai.InternalServerError, "llm-provider-rate-limited"),
    ],
)
def test_a_failing_provider_is_the_sdks_server_error(
    tmp_path: Path, fake_openai: FakeOpenAI, status: int, exception: type[openai.APIStatusError], code: str
) -> None:
    settings = make_settings(tmp_path, **openai_env(fake_openai.base_url, RAGWATCH_EMBEDDER="hashing"))
    with live_server(settings) as server:
        with server.client(auth()) as admin:
            kb_id = create_kb(admin, "handbook")
            ingest(admin, kb_id, title="Handbook", text=HANDBOOK)
        fake_openai.fail_next(status=status, path=CHAT, retry_after="7" if status == 429 else None)
        with sdk(server) as client, pytest.raises(exception) as raised:
            client.chat.completions.create(model=kb_id, messages=[{"role": "user", "content": QUESTION}])

    assert raised.value.code == code
    assert raised.value.type == "api_error"
    if status == 429:
        assert raised.value.status_code == 503
        assert raised.value.response.headers["retry-after"] == "7"
    else:
        assert raised.value.status_code == 502


def test_the_readmes_openai_sdk_example_runs_as_written(
    server: LiveServer, admin: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """Over a knowledge base holding the README, as in its quick start."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    kb_id = create_kb(admin, "readme")
    ingest(admin, kb_id, title="README", text=readme)
    section = readme.split("### Use it from the openai SDK", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]

    exec(  # noqa: S102 - the README's own example, run as a user would run it
        example.replace("http://127.0.0.1:8000", server.url), {"token": token(), "kb_id": kb_id}
    )

    printed = capsys.readouterr().out
    assert "\n\nSources:\n[1] README" in printed
    assert "make test" in printed
    assert "'document_id'" in printed


def test_a_follow_up_is_retrieved_in_the_context_of_the_earlier_questions(
    client: openai.OpenAI, admin: httpx.Client
) -> None:
    """ "Its secretariat" names no organisation: the earlier question does, and retrieval reads it."""
    kb_id = create_kb(admin, "organisations")
    ingest(admin, kb_id, title="WHO", text="The secretariat of the World Health Organization sits in Geneva.")
    ingest(admin, kb_id, title="UNESCO", text="The secretariat of UNESCO sits in Paris, on the Place de Fontenoy.")
    follow_up = {"role": "user", "content": "Where does its secretariat sit?"}
    conversation = [
        {"role": "user", "content": "What does UNESCO do?"},
        {"role": "assistant", "content": "The knowledge base does not say."},
        follow_up,
    ]

    # Asked alone first, its answer is cached: the same words in a conversation must not be answered from it.
    client.chat.completions.create(model=kb_id, messages=[follow_up])  # type: ignore[list-item]
    in_context = client.chat.completions.create(model=kb_id, messages=conversation)  # type: ignore[arg-type]

    cited = [c["title"] for c in (in_context.model_extra or {})["citations"]]
    assert cited[0] == "UNESCO"
    assert (in_context.choices[0].message.content or "").startswith("The secretariat of UNESCO sits in Paris")


def test_max_tokens_cuts_the_offline_answer_with_finish_reason_length_whole_and_streamed(
    client: openai.OpenAI, handbook: str
) -> None:
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    full = client.chat.completions.create(model=handbook, messages=messages)

    cut = client.chat.completions.create(model=handbook, messages=messages, max_tokens=4)
    chunks = list(client.chat.completions.create(model=handbook, messages=messages, max_tokens=4, stream=True))

    assert full.choices[0].finish_reason == "stop"
    assert cut.choices[0].finish_reason == "length"
    answer = (cut.choices[0].message.content or "").split("\n\nSources:")[0]
    assert answer
    assert (full.choices[0].message.content or "").startswith(answer)
    assert cut.usage is not None
    assert cut.usage.completion_tokens <= 4
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_max_tokens_and_temperature_reach_the_provider_and_part_the_cached_answers(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    settings = make_settings(tmp_path, **openai_env(fake_openai.base_url, RAGWATCH_EMBEDDER="hashing"))
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    with live_server(settings) as server:
        with server.client(auth()) as admin:
            kb_id = create_kb(admin, "handbook")
            ingest(admin, kb_id, title="Handbook", text=HANDBOOK)
        with sdk(server) as client:
            client.chat.completions.create(model=kb_id, messages=messages)
            client.chat.completions.create(model=kb_id, messages=messages, max_completion_tokens=30, temperature=0.2)
            client.chat.completions.create(model=kb_id, messages=messages, max_tokens=30, temperature=0.2)
            client.chat.completions.create(model=kb_id, messages=messages, max_tokens=100_000, stream=True)

    calls = [call.body for call in fake_openai.calls(CHAT)]
    assert len(calls) == 3, "the third request is the second's, answered from the cache"
    assert "temperature" not in calls[0]
    assert (calls[1]["max_tokens"], calls[1]["temperature"]) == (30, 0.2)
    assert calls[2]["max_tokens"] == calls[0]["max_tokens"], "never past RAGWATCH_LLM_MAX_OUTPUT_TOKENS"


@pytest.mark.parametrize("options", [{"max_tokens": 0}, {"temperature": 3}, {"max_completion_tokens": -1}])
def test_out_of_range_generation_options_are_the_sdks_bad_request(
    client: openai.OpenAI, handbook: str, options: dict[str, Any]
) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=handbook, messages=[{"role": "user", "content": QUESTION}], **options)
