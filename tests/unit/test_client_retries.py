"""The client's retry decisions, against an ``httpx.MockTransport`` that answers as the server would (this
file's timing is the one thing the real server cannot be made to show quickly: its ``Retry-After`` is the
rest of a rate-limit window). The real-server retries are in ``tests/clients/test_retries.py``."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from ragwatch_client import (
    APIConnectionError,
    APITimeoutError,
    AsyncClient,
    BadRequestError,
    Client,
    ConflictError,
    NotFoundError,
    RagwatchError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
)
from ragwatch_client._retries import RetryPolicy

PROBLEMS = "https://ragwatch.dev/problems/"
KB = {
    "id": "kb1",
    "name": "handbook",
    "description": "",
    "created_at": "2026-01-01T00:00:00+00:00",
    "document_count": 1,
    "chunk_count": 3,
}
CREATED = {"document_id": "d1", "chunks": 1, "replaced": False}


def problem(status: int, slug: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"type": PROBLEMS + slug, "title": slug, "status": status, "detail": f"{slug} happened"}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json", **(headers or {})})


class Script:
    """A server that answers requests with ``answers`` in turn (an exception is raised instead), recording
    each request and when it came."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(time.monotonic())
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def client(self, **options: float) -> Client:
        return Client("http://ragwatch.test", token="t", transport=httpx.MockTransport(self), **options)  # type: ignore[arg-type]

    def async_client(self, **options: float) -> AsyncClient:
        transport = httpx.MockTransport(self)
        return AsyncClient("http://ragwatch.test", token="t", transport=transport, **options)  # type: ignore[arg-type]

    def waits(self) -> list[float]:
        return [later - earlier for earlier, later in zip(self.times, self.times[1:], strict=False)]


# --- Retry-After -------------------------------------------------------------------------------------------


def test_a_429_is_sent_again_after_its_retry_after_seconds() -> None:
    script = Script(problem(429, "rate-limited", {"Retry-After": "1"}), httpx.Response(200, json=KB))

    with script.client() as client:
        kb = client.knowledge_bases.get("kb1")

    assert kb.id == "kb1"
    assert len(script.requests) == 2
    [wait] = script.waits()
    assert 1.0 <= wait < 1.5


async def test_a_503_is_sent_again_after_its_retry_after_date() -> None:
    """An HTTP date has whole seconds: the wait is what remains until that second."""
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    script = Script(
        problem(503, "llm-provider-unavailable", {"Retry-After": format_datetime(when, usegmt=True)}),
        httpx.Response(200, json=KB),
    )

    async with script.async_client() as client:
        kb = await client.knowledge_bases.get("kb1")

    assert kb.name == "handbook"
    [wait] = script.waits()
    remaining = (when - datetime.now(UTC)).total_seconds() + wait  # from the refusal to ``when``
    assert remaining - 0.05 <= wait <= remaining + 0.25


def test_a_retry_after_longer_than_max_retry_wait_is_raised_at_once() -> None:
    script = Script(problem(429, "rate-limited", {"Retry-After": "120"}))
    started = time.monotonic()

    with script.client(max_retry_wait=60) as client, pytest.raises(RateLimitError) as raised:
        client.search("kb1", "vacation")

    assert time.monotonic() - started < 0.5
    assert len(script.requests) == 1
    assert raised.value.retry_after == 120
    assert raised.value.status == 429


def test_retries_stop_after_max_retries_and_raise_the_last_error() -> None:
    refused = [problem(503, "rate-limiter-unavailable", {"Retry-After": "0"}) for _ in range(4)]
    script = Script(*refused)

    with script.client(max_retries=3) as client, pytest.raises(ServiceUnavailableError) as raised:
        client.knowledge_bases.get("kb1")

    assert len(script.requests) == 4
    assert raised.value.slug == "rate-limiter-unavailable"
    assert isinstance(raised.value, ServerError)


def test_max_retries_zero_never_sends_again() -> None:
    script = Script(problem(429, "rate-limited", {"Retry-After": "0"}))

    with script.client(max_retries=0) as client, pytest.raises(RateLimitError):
        client.chat("kb1", "hi?")

    assert len(script.requests) == 1


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (problem(400, "invalid-request"), BadRequestError),
        (problem(404, "not-found"), NotFoundError),
        (problem(409, "conflict"), ConflictError),
        (problem(500, "internal-error"), ServerError),
        (problem(502, "llm-provider-error"), ServerError),
        (problem(504, "llm-provider-timeout"), ServerError),
    ],
    ids=["400", "404", "409-conflict", "500", "502", "504"],
)
def test_other_errors_are_raised_without_a_retry(answer: httpx.Response, error: type[RagwatchError]) -> None:
    script = Script(answer)

    with script.client() as client, pytest.raises(error):
        client.knowledge_bases.get("kb1")

    assert len(script.requests) == 1


def test_a_409_idempotency_key_in_use_is_sent_again_with_the_same_key() -> None:
    """An earlier attempt of the same creation is still running on the server: wait, then ask again."""
    script = Script(problem(409, "idempotency-key-in-use", {"Retry-After": "0"}), httpx.Response(201, json=CREATED))

    with script.client() as client:
        created = client.documents.create("kb1", "Title", "Text.")

    assert created.document_id == "d1"
    keys = [request.headers["idempotency-key"] for request in script.requests]
    assert len(keys) == 2
    assert keys[0] == keys[1]


# --- backoff ---------------------------------------------------------------------------------------------


def test_without_retry_after_the_wait_doubles_from_half_a_second_with_jitter_up_to_a_cap() -> None:
    policy = RetryPolicy(max_retries=10)

    for retry, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (7, 8.0)]:
        waits = [policy.wait(retry, None) for _ in range(200)]
        assert all(wait is not None and ceiling / 2 <= wait <= ceiling for wait in waits), (retry, waits[:5])
        assert len(set(waits)) > 100  # jittered
    assert policy.wait(10, None) is None
    assert policy.wait(0, 3.0) == 3.0
    assert policy.wait(0, 61.0) is None


def test_a_503_without_retry_after_is_sent_again_after_a_backoff() -> None:
    script = Script(problem(503, "llm-provider-unavailable"), httpx.Response(200, json=KB))

    with script.client() as client:
        client.knowledge_bases.get("kb1")

    [wait] = script.waits()
    assert 0.25 <= wait < 0.75


def test_negative_retry_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        Client("http://ragwatch.test", max_retries=-1)


# --- connection failures ---------------------------------------------------------------------------------


def _lost() -> httpx.ReadError:
    return httpx.ReadError("connection reset by peer")


Call = Callable[[Client], object]
IDEMPOTENT: list[tuple[str, Call]] = [
    ("get", lambda client: client.knowledge_bases.get("kb1")),
    ("delete", lambda client: client.documents.delete("kb1", "d1")),
    ("search", lambda client: client.search("kb1", "vacation")),
    ("create-document", lambda client: client.documents.create("kb1", "Title", "Text.")),
    ("create-knowledge-base", lambda client: client.knowledge_bases.create("handbook")),
    ("reindex", lambda client: client.knowledge_bases.reindex("kb1")),
]


@pytest.mark.parametrize("call", [call for _, call in IDEMPOTENT], ids=[name for name, _ in IDEMPOTENT])
def test_a_request_that_cannot_do_anything_twice_is_sent_again_after_a_connection_failure(call: Call) -> None:
    script = Script(_lost(), httpx.ConnectError("refused"))

    with script.client(max_retries=1) as client, pytest.raises(APIConnectionError) as raised:
        call(client)

    assert len(script.requests) == 2
    assert isinstance(raised.value.__cause__, httpx.ConnectError)
    keys = {request.headers.get("idempotency-key") for request in script.requests}
    assert len(keys) == 1  # the same key (or none) on every attempt


def test_a_creation_carries_the_callers_idempotency_key_on_every_attempt() -> None:
    script = Script(_lost(), httpx.Response(201, json=CREATED))

    with script.client() as client:
        client.documents.create("kb1", "Title", "Text.", idempotency_key="import-42")

    assert [request.headers["idempotency-key"] for request in script.requests] == ["import-42", "import-42"]


CHATS: list[tuple[str, Call]] = [
    ("whole", lambda client: client.chat("kb1", "hi?")),
    ("streamed", lambda client: list(client.chat_stream("kb1", "hi?"))),
]


@pytest.mark.parametrize("call", [call for _, call in CHATS], ids=[name for name, _ in CHATS])
def test_a_chat_is_never_sent_again_after_a_connection_failure(call: Call) -> None:
    script = Script(_lost())

    with script.client() as client, pytest.raises(APIConnectionError):
        call(client)

    assert len(script.requests) == 1
    assert "idempotency-key" not in script.requests[0].headers


async def test_a_timeout_is_an_api_timeout_error_and_retried_when_safe() -> None:
    script = Script(httpx.ReadTimeout("slow"), httpx.ReadTimeout("slow"))

    async with script.async_client(max_retries=1) as client:
        with pytest.raises(APITimeoutError) as raised:
            await client.knowledge_bases.get("kb1")

    assert len(script.requests) == 2
    assert isinstance(raised.value, APIConnectionError)
    assert raised.value.status is None
