"""A local OpenAI-compatible HTTP server: the one stand-in the test suite allows, for the external LLM.

It is a raw ASGI app served by uvicorn on a free port in a background thread, so the service reaches it
through the real ``openai`` client over real HTTP. It serves

* ``POST /v1/embeddings``: deterministic vectors from the offline :class:`HashingEmbedder`, so similarity
  between texts is meaningful, ``dimensions`` wide (1536 when the request names none);
* ``POST /v1/chat/completions``: a JSON completion with usage, or with ``"stream": true`` Server-Sent
  Events (``data: {chunk}`` lines, a final usage chunk when ``stream_options.include_usage``, then
  ``data: [DONE]``).

Every request is recorded (path, headers, JSON body). A test can make the next calls fail with a status
(:meth:`FakeOpenAI.fail_next`), delay every answer (``delay_s``), stream slowly (``chunk_delay_s``), stall or
cut a stream after some chunks, see for each stream whether the client hung up before its end, and have
every answer name the question it was asked (``echo_question``), to tell whose answer a reply carries.

Use it by importing the fixture into a test module: ``from tests.fake_openai import fake_openai``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn

from service.providers.offline import HashingEmbedder
from tests.support import free_port

__all__ = [
    "API_KEY",
    "CHAT",
    "DEFAULT_ANSWER",
    "ECHO_PREFIX",
    "EMBEDDINGS",
    "FAKE_MODEL",
    "FakeOpenAI",
    "RecordedRequest",
    "RecordedStream",
    "fake_openai",
    "is_rewrite",
    "openai_env",
    "running_fake_openai",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

FAKE_MODEL = "fake-gpt-2024-08-06"
"""The model every completion claims to come from (unlike the model asked for, to tell the two apart)."""
DEFAULT_ANSWER = "The fake model read the context and answers from it [1]."
ECHO_PREFIX = "You asked: "
"""What an answer starts with when :attr:`FakeOpenAI.echo_question` is on; the question follows."""
API_KEY = "sk-test"
DEFAULT_EMBEDDING_DIMENSIONS = 1536
EMBEDDINGS = "/v1/embeddings"
CHAT = "/v1/chat/completions"

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    429: "rate_limit_exceeded",
    500: "server_error",
    503: "service_unavailable",
}


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased names; a repeated header keeps its last value."""
    body: dict[str, Any]


@dataclass
class RecordedStream:
    """One streamed completion as the fake sent it."""

    chunks_planned: int
    chunks_sent: int = 0
    completed: bool = False
    """Every chunk and ``data: [DONE]`` were sent."""
    client_disconnected: bool = False
    """The client hung up before the stream was complete."""
    ended: threading.Event = field(default_factory=threading.Event)
    """Set once the fake stopped streaming, whether complete or not."""


@dataclass
class _Failure:
    status: int
    path: str | None
    headers: dict[str, str]
    remaining: int


class FakeOpenAI:
    """The fake's state and knobs; attributes may be changed by a test at any time between calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._streams: list[RecordedStream] = []
        self._failures: list[_Failure] = []
        self.url = ""
        """``http://127.0.0.1:<port>``, once running; the ``openai`` base URL is ``url + "/v1"``."""
        self.answer = DEFAULT_ANSWER
        """The content of every chat completion, whole or streamed (unless ``echo_question``)."""
        self.echo_question = False
        """Answer ``"You asked: <question>"`` instead of ``answer``: ``<question>`` is what follows the last
        ``Question: `` in the last user message (where ragwatch's user prompt puts the question), or that whole
        message when it has none. Streamed completions carry the same text, word by word."""
        self.model = FAKE_MODEL
        self.prompt_tokens = 4321
        self.completion_tokens = 87
        self.delay_s = 0.0
        """Wait this long before answering a call (for timeouts)."""
        self.delay_path: str | None = None
        """Delay only the calls to this path (``CHAT`` or ``EMBEDDINGS``); every call when ``None``."""
        self.chunk_delay_s = 0.0
        """Wait this long before each streamed chunk after the first (for slow streams)."""
        self.stall_after_chunks: int | None = None
        """Send this many chunks of a stream, then send nothing more until the client hangs up."""
        self.cut_after_chunks: int | None = None
        """Send this many chunks of a stream, then drop the connection mid-body."""
        self.malformed_path: str | None = None
        """Answer calls to this path that are not streamed with a body that claims to be JSON and is not."""
        self.malformed_after_chunks: int | None = None
        """Send this many chunks of a stream, then a ``data:`` line that is not JSON."""
        self.reverse_embedding_order = False
        """List embeddings last input first (each still carries its ``index``)."""
        self.standalone: str | None = None
        """The content of a question-rewrite call (its system message asks for a standalone question);
        ``None``: ``"Standalone: <the follow-up>"``."""

    # --- knobs ---------------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def fail_next(
        self,
        times: int = 1,
        status: int = 500,
        *,
        path: str | None = None,
        retry_after: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` calls (to ``path`` only, when given) with ``status`` and an error body.

        ``retry_after`` is sent as the ``Retry-After`` header; ``headers`` are sent as they are.
        """
        extra = {**(headers or {}), **({"retry-after": retry_after} if retry_after is not None else {})}
        with self._lock:
            self._failures.append(_Failure(status, path, extra, times))

    # --- what was seen -------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def calls(self, path: str) -> list[RecordedRequest]:
        return [request for request in self.requests if request.path == path]

    @property
    def streams(self) -> list[RecordedStream]:
        with self._lock:
            return list(self._streams)

    def wait_for_streams(self, count: int, timeout_s: float = 5.0) -> list[RecordedStream]:
        """The first ``count`` streams, once each has ended (raises if that takes longer than ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while len(self.streams) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the fake saw {len(self.streams)} streams, not {count}")
            time.sleep(0.01)
        streams = self.streams[:count]
        for stream in streams:
            if not stream.ended.wait(max(deadline - time.monotonic(), 0)):
                raise AssertionError(f"a stream had not ended after {timeout_s}s: {stream}")
        return streams

    # --- the ASGI app --------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        request = RecordedRequest(
            method=scope["method"],
            path=scope["path"],
            headers={name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]},
            body=body,
        )
        with self._lock:
            self._requests.append(request)
            failure = self._take_failure(request.path)
        # A client that hangs up is noticed while waiting: uvicorn answers receive() only then.
        hang_up = asyncio.ensure_future(receive())
        try:
            delayed = self.delay_path in (None, request.path)
            if delayed and self.delay_s and await _wait_for_hang_up(hang_up, self.delay_s):
                return
            if failure is not None:
                await self._send_error(send, failure.status, failure.headers)
            else:
                await self._answer(send, request, hang_up)
        finally:
            hang_up.cancel()

    async def _answer(self, send: Send, request: RecordedRequest, hang_up: asyncio.Future[Message]) -> None:
        streamed = bool(request.body.get("stream"))
        if request.method != "POST" or request.path not in (EMBEDDINGS, CHAT):
            await self._send_error(send, 404, {}, f"No route {request.method} {request.path} in the fake.")
        elif request.path == self.malformed_path and not streamed:
            await _send_raw_json(send, b'{"object": "list", "data": [')
        elif request.path == EMBEDDINGS:
            await self._embeddings(send, request.body)
        elif streamed:
            await self._stream_chat(send, request.body, hang_up)
        else:
            await _send_json(send, 200, self._completion(request.body))

    def _take_failure(self, path: str) -> _Failure | None:
        for failure in self._failures:
            if failure.path in (None, path):
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.remove(failure)
                return failure
        return None

    async def _send_error(self, send: Send, status: int, headers: Mapping[str, str], message: str = "") -> None:
        error = {
            "message": message or f"Injected failure {status} from the fake OpenAI server.",
            "type": _ERROR_TYPES.get(status, "api_error"),
            "param": None,
            "code": None,
        }
        extra = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
        await _send_json(send, status, {"error": error}, extra)

    async def _embeddings(self, send: Send, body: dict[str, Any]) -> None:
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs or not all(isinstance(text, str) for text in inputs):
            await self._send_error(send, 400, {}, "'input' must be a string or a non-empty list of strings.")
            return
        dimensions = int(body.get("dimensions") or DEFAULT_EMBEDDING_DIMENSIONS)
        vectors = HashingEmbedder(dimensions).embed_sync(inputs)
        as_base64 = body.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": base64.b64encode(vector.tobytes()).decode() if as_base64 else vector.tolist(),
            }
            for index, vector in enumerate(vectors)
        ]
        if self.reverse_embedding_order:
            data.reverse()
        tokens = sum(len(text.split()) for text in inputs)
        reply = {
            "object": "list",
            "data": data,
            "model": body.get("model", "unknown"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        await _send_json(send, 200, reply)

    def _envelope(self, kind: str, choice: dict[str, Any]) -> dict[str, Any]:
        """The fields a chat completion and each of its streamed chunks share; ``kind`` is the ``object`` type."""
        return {
            "id": "chatcmpl-fake",
            "object": kind,
            "created": int(time.time()),
            "model": self.model,
            "system_fingerprint": "fp_fake",
            "choices": [choice],
        }

    def _answer_to(self, body: dict[str, Any]) -> str:
        """The content of the completion asked for by ``body``: ``answer``, or the echo of its question; for a
        question-rewrite call, ``standalone``."""
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        user_messages = [m for m in messages if m.get("role") == "user"]
        content = user_messages[-1].get("content") if user_messages else ""
        if not isinstance(content, str):  # content parts: their text, in order
            content = "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))
        if is_rewrite(body):
            return self.standalone or "Standalone: " + content.rpartition("Follow-up question: ")[2].strip()
        if not self.echo_question:
            return self.answer
        _, found, question = content.rpartition("Question: ")
        return ECHO_PREFIX + (question if found else content).strip()

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        message = {"role": "assistant", "content": self._answer_to(body), "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        return {**self._envelope("chat.completion", choice), "usage": self._usage()}

    def _usage(self) -> dict[str, int]:
        total = self.prompt_tokens + self.completion_tokens
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens, "total_tokens": total}

    def _chunks(self, content: str, include_usage: bool) -> list[dict[str, Any]]:
        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {**self._envelope("chat.completion.chunk", choice), **({"usage": None} if include_usage else {})}

        chunks = [chunk({"role": "assistant", "content": ""})]
        chunks += [chunk({"content": piece}) for piece in re.findall(r"\S+\s*", content)]
        chunks.append(chunk({}, "stop"))
        if include_usage:
            chunks.append({**chunks[-1], "choices": [], "usage": self._usage()})
        return chunks

    async def _stream_chat(self, send: Send, body: dict[str, Any], hang_up: asyncio.Future[Message]) -> None:
        options = body.get("stream_options") or {}
        chunks = self._chunks(self._answer_to(body), include_usage=bool(options.get("include_usage")))
        record = RecordedStream(chunks_planned=len(chunks))
        with self._lock:
            self._streams.append(record)
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                    ],
                }
            )
            for number, chunk in enumerate(chunks):
                if number == self.cut_after_chunks:
                    raise _CutStream
                if number == self.malformed_after_chunks:
                    await send({"type": "http.response.body", "body": _sse("{not json"), "more_body": True})
                if number == self.stall_after_chunks:
                    await hang_up
                if number and self.chunk_delay_s:
                    await _wait_for_hang_up(hang_up, self.chunk_delay_s)
                if hang_up.done():
                    record.client_disconnected = True
                    return
                await send({"type": "http.response.body", "body": _sse(json.dumps(chunk)), "more_body": True})
                record.chunks_sent += 1
            if hang_up.done():
                record.client_disconnected = True
                return
            await send({"type": "http.response.body", "body": _sse("[DONE]"), "more_body": False})
            record.completed = True
        finally:
            record.ended.set()


class _CutStream(Exception):
    """Raised inside the app so that uvicorn drops the connection in the middle of a chunked body."""


def _sse(data: str) -> bytes:
    return f"data: {data}\n\n".encode()


async def _wait_for_hang_up(hang_up: asyncio.Future[Message], seconds: float) -> bool:
    """Sleep ``seconds``, or less if the client hangs up first; whether it did."""
    await asyncio.wait({hang_up}, timeout=seconds)
    return hang_up.done()


async def _send_json(send: Send, status: int, payload: object, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await _send_raw_json(send, json.dumps(payload).encode(), status, headers)


async def _send_raw_json(
    send: Send, body: bytes, status: int = 200, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


def is_rewrite(body: dict[str, Any]) -> bool:
    """Whether a chat call asks for a follow-up to be made standalone (ragwatch's rewrite prompt)."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    return bool(messages) and messages[0].get("role") == "system" and "standalone" in str(messages[0].get("content"))


def openai_env(base_url: str, **overrides: str) -> dict[str, str]:
    """Environment that points both ragwatch providers at ``base_url`` with :data:`API_KEY`, without retries."""
    return {
        "RAGWATCH_LLM": "openai",
        "RAGWATCH_EMBEDDER": "openai",
        "OPENAI_BASE_URL": base_url,
        "OPENAI_API_KEY": API_KEY,
        "RAGWATCH_LLM_MAX_RETRIES": "0",
        **overrides,
    }


@contextmanager
def running_fake_openai() -> Iterator[FakeOpenAI]:
    """A :class:`FakeOpenAI` served by uvicorn on a free port for the duration of the block."""
    fake = FakeOpenAI()
    port = free_port()
    config = uvicorn.Config(
        fake,
        host="127.0.0.1",
        port=port,
        log_level="critical",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name="fake-openai")
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the fake OpenAI server did not start")
        time.sleep(0.01)
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A fresh fake OpenAI-compatible server for one test; ``fake_openai.base_url`` is its ``/v1``."""
    with running_fake_openai() as fake:
        yield fake
