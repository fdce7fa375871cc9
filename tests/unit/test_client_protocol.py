"""The client's side of the protocol, without a server: the requests it builds, how it reads answers, problems
and Server-Sent Events, and that it stands alone (httpx and msgspec, nothing of the server)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import msgspec
import pytest
from ragwatch_client import (
    SUFFIXES,
    AnswerDelta,
    AnswerDone,
    AsyncClient,
    ChatEvent,
    ChatResponse,
    Client,
    KnowledgeBase,
    ServerError,
    UnexpectedResponseError,
    UnprocessableError,
    Usage,
    document_id_for,
)
from ragwatch_client._core import page_decoder
from ragwatch_client._errors import error_from_response, retry_after, trace_id_of
from ragwatch_client._sse import ChatEvents

from service.models import ID_PATTERN
from service.parsing.formats import SUFFIXES as SERVER_SUFFIXES

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "python"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
KB = {"id": "kb1", "name": "n", "description": "", "created_at": "2026-01-01T00:00:00+00:00"}
DONE = {"citations": [], "model": "m", "usage": {"input_tokens": 1, "output_tokens": 2}, "trace_id": TRACE}


class Recorder:
    """A transport answering every request with ``answer``, keeping the requests."""

    def __init__(self, answer: httpx.Response) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer

    def client(self, token: str = "") -> Client:
        return Client("http://ragwatch.test/prefix/", token=token, transport=httpx.MockTransport(self))


# --- requests --------------------------------------------------------------------------------------------


def test_every_request_carries_the_token_and_the_clients_name() -> None:
    recorder = Recorder(httpx.Response(200, json={"data": [KB], "next_cursor": None}))

    with recorder.client(token="secret-token") as client:
        list(client.knowledge_bases.list(limit=5))

    [request] = recorder.requests
    assert str(request.url) == "http://ragwatch.test/prefix/v1/knowledge-bases?limit=5"
    assert request.headers["authorization"] == "Bearer secret-token"
    assert request.headers["user-agent"].startswith("ragwatch-client/0.1.0 ")


def test_ids_are_quoted_into_the_path_so_they_cannot_reach_another_route() -> None:
    recorder = Recorder(httpx.Response(204))

    with recorder.client() as client:
        client.documents.delete("kb/1", "../../knowledge-bases/kb2?x=1")

    [request] = recorder.requests
    assert (
        request.url.raw_path == b"/prefix/v1/knowledge-bases/kb%2F1/documents/..%2F..%2Fknowledge-bases%2Fkb2%3Fx%3D1"
    )


@pytest.mark.parametrize(("document_id", "path"), [("..", b"%2E%2E"), (".", b"%2E"), ("v1.2", b"v1.2")])
def test_dot_ids_stay_segments_instead_of_climbing_the_path(document_id: str, path: bytes) -> None:
    recorder = Recorder(httpx.Response(204))

    with recorder.client() as client:
        client.documents.delete("kb1", document_id)

    assert recorder.requests[0].url.raw_path == b"/prefix/v1/knowledge-bases/kb1/documents/" + path


def test_an_empty_id_is_refused_before_anything_is_sent() -> None:
    recorder = Recorder(httpx.Response(204))

    with recorder.client() as client, pytest.raises(ValueError, match="cannot be empty"):
        client.knowledge_bases.delete("")

    assert recorder.requests == []


def test_a_chat_body_names_only_what_the_caller_gave_and_creations_carry_a_fresh_key() -> None:
    recorder = Recorder(httpx.Response(200, json={**DONE, "answer": "a"}))

    with recorder.client() as client:
        client.chat("kb1", "hi?")
        client.chat("kb1", "hi?", top_k=3, conversation_id="c1")
        recorder.answer = httpx.Response(201, json=KB)
        client.knowledge_bases.create("one")
        client.knowledge_bases.create("two")

    bodies = [json.loads(request.content) for request in recorder.requests]
    assert bodies[0] == {"kb_id": "kb1", "question": "hi?"}
    assert bodies[1] == {"kb_id": "kb1", "question": "hi?", "top_k": 3, "conversation_id": "c1"}
    assert bodies[2] == {"name": "one", "description": ""}
    keys = [request.headers.get("idempotency-key") for request in recorder.requests]
    assert keys[:2] == [None, None]
    assert keys[2]
    assert keys[3]
    assert keys[2] != keys[3]


def test_an_upload_is_one_multipart_file_with_its_fields() -> None:
    recorder = Recorder(httpx.Response(201, json={"document_id": "d1", "chunks": 1, "replaced": False}))

    with recorder.client() as client:
        client.documents.upload("kb1", _file(b"# Hi\n"), metadata={"a": 1}, id="d1", idempotency_key="k1")

    [request] = recorder.requests
    body = request.read()
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert request.headers["idempotency-key"] == "k1"
    assert b'name="file"; filename="notes.md"' in body
    assert b'name="metadata"\r\n\r\n{"a": 1}' in body
    assert b'name="id"\r\n\r\nd1' in body
    assert b'name="title"' not in body


def _file(content: bytes) -> io.BytesIO:
    handle = io.BytesIO(content)
    handle.name = "/somewhere/notes.md"
    return handle


def test_a_client_given_an_httpx_client_leaves_it_open_and_refuses_a_transport_too() -> None:
    http = httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(200, json=[KB])))

    with Client("http://ragwatch.test", http_client=http) as client:
        assert [kb.id for kb in client.knowledge_bases.list()] == ["kb1"]

    assert not http.is_closed
    with pytest.raises(ValueError, match="not both"):
        Client(http_client=http, transport=httpx.MockTransport(lambda _: httpx.Response(200)))
    http.close()


def test_the_address_and_token_default_to_the_environment() -> None:
    code = "from ragwatch_client import Client; c = Client(); print(c.base_url, c._options.headers['Authorization'])"
    env = {"RAGWATCH_URL": "http://api.example:9000/", "RAGWATCH_TOKEN": "from-env", "PATH": ""}

    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)

    assert result.stdout == "http://api.example:9000 Bearer from-env\n"


# --- answers ---------------------------------------------------------------------------------------------


def test_answers_with_fields_the_client_does_not_know_still_decode() -> None:
    """A newer server may add fields; an older one lacks the ones added after the first release."""
    newer = {**DONE, "answer": "a", "cached": True, "latency_ms": 12, "citations": [{**_passage(), "lang": "en"}]}
    older = {key: value for key, value in {**DONE, "answer": "a"}.items() if key != "cached"}

    reply = msgspec.json.decode(json.dumps(newer), type=ChatResponse)
    old = msgspec.json.decode(json.dumps(older), type=ChatResponse)

    assert reply.cached
    assert reply.citations[0].page == 3
    assert (old.cached, old.conversation_id) == (False, None)


def _passage() -> dict[str, object]:
    return {"document_id": "d", "chunk_id": "c", "title": "t", "score": 0.5, "text": "x", "page": 3}


def test_a_page_decodes_and_a_bare_list_is_one_last_page() -> None:
    decode = page_decoder(KnowledgeBase)

    page = decode(json.dumps({"data": [KB], "next_cursor": "abc"}).encode())
    bare = decode(json.dumps([KB, KB]).encode())

    assert (len(page.data), page.next_cursor) == (1, "abc")
    assert (len(bare.data), bare.next_cursor) == (2, None)
    with pytest.raises(UnexpectedResponseError):
        decode(b'{"data": "nope"}')


def test_an_error_that_is_not_a_problem_keeps_its_status_and_text() -> None:
    """A proxy's HTML page in front of the service, say."""
    response = httpx.Response(502, text="<html>Bad gateway</html>", request=httpx.Request("GET", "http://x"))

    error = error_from_response(response)

    assert isinstance(error, ServerError)
    assert (error.status, error.type, error.title) == (502, "about:blank", "Bad Gateway")
    assert error.detail == "<html>Bad gateway</html>"


def test_the_trace_id_comes_from_traceresponse_or_traceparent() -> None:
    assert trace_id_of(httpx.Headers({"traceresponse": f"00-{TRACE}-00f067aa0ba902b7-01"})) == TRACE
    assert trace_id_of(httpx.Headers({"traceparent": f"00-{TRACE}-00f067aa0ba902b7-00"})) == TRACE
    assert trace_id_of(httpx.Headers({"traceresponse": "garbage"})) is None
    assert trace_id_of(httpx.Headers()) is None


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after(httpx.Headers({"retry-after": "7"})) == 7
    assert retry_after(httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0  # in the past
    assert retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert retry_after(httpx.Headers()) is None


# --- Server-Sent Events ----------------------------------------------------------------------------------


def _events(lines: list[str], headers: dict[str, str] | None = None) -> list[ChatEvent]:
    stream = ChatEvents(httpx.Response(200, headers=headers or {}))
    events = [event for line in lines for event in stream.feed(line)]
    return events + stream.end()


def test_deltas_then_done_with_comments_multi_line_data_and_unknown_events_skipped() -> None:
    lines = [
        ": keep-alive",
        "event: delta",
        'data: {"text":',
        'data: "Twenty-five days"}',
        "",
        "event: progress",
        'data: {"step": 2}',
        "",
        "event: done",
        f"data: {json.dumps({**DONE, 'conversation_id': 'c1', 'extra': 1})}",
    ]

    events = _events(lines)

    assert events == [
        AnswerDelta(text="Twenty-five days"),
        AnswerDone(citations=[], model="m", usage=Usage(1, 2), trace_id=TRACE, conversation_id="c1"),
    ]


def test_an_error_event_raises_the_problem_it_holds() -> None:
    problem = {"type": "https://ragwatch.dev/problems/needs-ocr", "title": "No text", "status": 422, "detail": "d"}
    headers = {"traceresponse": f"00-{TRACE}-00f067aa0ba902b7-01"}

    with pytest.raises(UnprocessableError) as raised:
        _events(
            ["event: delta", 'data: {"text": "a"}', "", "event: error", f"data: {json.dumps(problem)}", ""], headers
        )

    assert (raised.value.status, raised.value.slug, raised.value.trace_id) == (422, "needs-ocr", TRACE)


def test_a_stream_that_ends_before_done_is_an_unexpected_response() -> None:
    with pytest.raises(UnexpectedResponseError, match="before its 'done' event"):
        _events(["event: delta", 'data: {"text": "a"}', ""])


def test_an_event_that_is_not_json_is_an_unexpected_response() -> None:
    with pytest.raises(UnexpectedResponseError, match="'delta'"):
        _events(["event: delta", "data: {not json", ""])


# --- what the client stands on ---------------------------------------------------------------------------


def test_a_folder_upload_sends_the_suffixes_the_server_parses() -> None:
    assert set(SUFFIXES) == set(SERVER_SUFFIXES)


def test_document_ids_from_paths_are_stable_valid_ids() -> None:
    for name in ("_index.md", "Quarterly report (final).pdf", "ü.txt", ".hidden.md", "x" * 90 + ".md"):
        made = document_id_for(Path("/docs") / name)
        assert re.fullmatch(ID_PATTERN, made), made
        assert made == document_id_for(Path("/docs") / name)
    assert document_id_for("/a/notes.md") != document_id_for("/b/notes.md")


def test_the_client_depends_on_httpx_and_msgspec_only_and_imports_nothing_of_the_server() -> None:
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    code = "import sys, ragwatch_client; print(sorted({m.split('.')[0] for m in sys.modules}))"

    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    assert [re.split(r"[<>=!~ ]", dependency)[0] for dependency in project["dependencies"]] == ["httpx", "msgspec"]
    assert not {"service", "telemetry", "litestar", "tests"} & set(eval(loaded))  # noqa: S307 - a list literal we printed
    assert (CLIENT / "src" / "ragwatch_client" / "py.typed").exists()


async def test_uploading_with_no_concurrency_is_refused_by_both_clients(tmp_path: Path) -> None:
    files = [tmp_path / "a.txt"]
    files[0].write_text("text")
    async with AsyncClient("http://127.0.0.1:9", token="t") as client:
        with pytest.raises(ValueError, match="concurrency"):
            [result async for result in client.documents.upload_files("kb1", files, concurrency=0)]
    with Client("http://127.0.0.1:9", token="t") as sync_client, pytest.raises(ValueError, match="concurrency"):
        list(sync_client.documents.upload_files("kb1", files, concurrency=0))
