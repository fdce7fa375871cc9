"""Bad input gets a 4xx RFC 9457 problem with a stable ``type`` per kind, never a 500, and stores nothing."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from functools import partial
from typing import Any

import httpx
import pytest

from tests import support
from tests.support import PROBLEM_BASE, LiveServer, auth, documents_url, live_server, make_settings, token

INVALID = "invalid-request"
TOO_LARGE = "payload-too-large"
UNSUPPORTED = "unsupported-media-type"
MAX_BODY = 2000

assert_problem = partial(support.assert_problem, detail=True)
"""A problem about bad input also says in its ``detail`` what was wrong."""


def assert_nothing_stored(client: httpx.Client, kb_id: str) -> None:
    detail = client.get(f"/v1/knowledge-bases/{kb_id}").json()
    assert (detail["document_count"], detail["chunk_count"]) == (0, 0)
    assert client.get(f"/v1/knowledge-bases/{kb_id}/documents").json()["data"] == []


# --- JSON bodies ---------------------------------------------------------------------------------------------

MALFORMED_JSON = [b"{", b'{"title": "t", "text": }', b"not json", b"", b'{"title": "t"} trailing', b"[1, 2"]


@pytest.mark.parametrize("body", MALFORMED_JSON)
def test_malformed_json_is_an_invalid_request_on_every_json_route(admin: httpx.Client, kb_id: str, body: bytes) -> None:
    headers = {"Content-Type": "application/json"}
    for url in ("/v1/knowledge-bases", documents_url(kb_id), "/v1/chat"):
        assert_problem(admin.post(url, content=body, headers=headers), 400, INVALID)
    assert_nothing_stored(admin, kb_id)


@pytest.mark.parametrize(
    "document",
    [
        {"title": 1, "text": "x"},
        {"title": "t", "text": ["x"]},
        {"title": "t", "text": None},
        {"title": "t", "text": "x", "metadata": "not an object"},
        {"title": "t", "text": "x", "metadata": [1, 2]},
        {"title": "t", "text": "x", "id": 42},
        [{"title": "t", "text": "x"}],
        "just a string",
        None,
    ],
)
def test_documents_with_wrong_types_are_invalid_and_not_stored(admin: httpx.Client, kb_id: str, document: Any) -> None:
    body = json.dumps(document)

    response = admin.post(documents_url(kb_id), content=body, headers={"Content-Type": "application/json"})

    assert_problem(response, 400, INVALID)
    assert_nothing_stored(admin, kb_id)


@pytest.mark.parametrize("document", [{}, {"title": "t"}, {"text": "x"}, {"id": "doc", "metadata": {}}])
def test_documents_missing_fields_are_invalid_and_not_stored(admin: httpx.Client, kb_id: str, document: Any) -> None:
    assert_problem(admin.post(documents_url(kb_id), json=document), 400, INVALID)
    assert_nothing_stored(admin, kb_id)


@pytest.mark.parametrize(
    "document",
    [
        {"title": "", "text": "x"},
        {"title": "   ", "text": "x"},
        {"title": "\n\t", "text": "x"},
        {"title": "t", "text": ""},
        {"title": "t", "text": "  \n\n \t "},
        {"title": "t" * 501, "text": "x"},
    ],
)
def test_empty_blank_or_overlong_title_or_text_is_invalid_and_not_stored(
    admin: httpx.Client, kb_id: str, document: Any
) -> None:
    assert_problem(admin.post(documents_url(kb_id), json=document), 400, INVALID)
    assert_nothing_stored(admin, kb_id)


def test_unknown_fields_are_invalid_on_every_json_route(admin: httpx.Client, kb_id: str) -> None:
    assert_problem(admin.post("/v1/knowledge-bases", json={"name": "kb", "colour": "red"}), 400, INVALID)
    assert_problem(admin.post(documents_url(kb_id), json={"title": "t", "text": "x", "tags": ["a"]}), 400, INVALID)
    chat = admin.post("/v1/chat", json={"kb_id": kb_id, "question": "Why?", "temperature": 0.2})
    assert_problem(chat, 400, INVALID)
    assert_nothing_stored(admin, kb_id)


@pytest.mark.parametrize(
    "body", [{}, {"name": ""}, {"name": "   "}, {"name": 7}, {"name": "x" * 201}, {"name": "ok", "description": 3}]
)
def test_knowledge_bases_with_bad_fields_are_invalid_and_not_created(admin: httpx.Client, body: Any) -> None:
    before = len(admin.get("/v1/knowledge-bases").json()["data"])

    assert_problem(admin.post("/v1/knowledge-bases", json=body), 400, INVALID)

    assert len(admin.get("/v1/knowledge-bases").json()["data"]) == before


@pytest.mark.parametrize("question", ["", " ", "   \n\t  ", "q" * 4001, 42, None])
def test_empty_blank_overlong_or_mistyped_questions_are_invalid(admin: httpx.Client, kb_id: str, question: Any) -> None:
    assert_problem(admin.post("/v1/chat", json={"kb_id": kb_id, "question": question}), 400, INVALID)


@pytest.mark.parametrize("body", [{"question": "Why?"}, {"kb_id": "kb_x"}, {}])
def test_chat_requests_missing_fields_are_invalid(admin: httpx.Client, body: Any) -> None:
    assert_problem(admin.post("/v1/chat", json=body), 400, INVALID)


@pytest.mark.parametrize("top_k", [0, -1, 51, 1000, "five", 2.5, True])
def test_top_k_out_of_range_or_not_an_integer_is_invalid(admin: httpx.Client, kb_id: str, top_k: Any) -> None:
    response = admin.post("/v1/chat", json={"kb_id": kb_id, "question": "Why?", "top_k": top_k})

    assert_problem(response, 400, INVALID)


@pytest.mark.parametrize("top_k", [1, 50])
def test_top_k_at_the_bounds_is_accepted(admin: httpx.Client, kb_id: str, top_k: int) -> None:
    response = admin.post("/v1/chat", json={"kb_id": kb_id, "question": "Why?", "top_k": top_k})

    assert response.status_code == 200, response.text


def test_invalid_utf8_in_a_json_body_is_an_invalid_request_on_every_json_route(admin: httpx.Client, kb_id: str) -> None:
    headers = {"Content-Type": "application/json"}
    bodies = {
        "/v1/knowledge-bases": b'{"name": "caf\xe9"}',
        documents_url(kb_id): b'{"title": "t", "text": "caf\xe9 \xff\xfe"}',
        "/v1/chat": b'{"kb_id": "' + kb_id.encode() + b'", "question": "caf\xe9?"}',
    }
    for url, body in bodies.items():
        problem = assert_problem(admin.post(url, content=body, headers=headers), 400, INVALID)
        assert "UTF-8" in problem["detail"]
    assert_nothing_stored(admin, kb_id)


# --- content types and uploads -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "application/x-www-form-urlencoded", "application/pdf"]
)
def test_an_unsupported_content_type_is_415(admin: httpx.Client, kb_id: str, content_type: str) -> None:
    body = json.dumps({"title": "t", "text": "x", "name": "kb"}).encode()
    headers = {"Content-Type": content_type}

    assert_problem(admin.post(documents_url(kb_id), content=body, headers=headers), 415, UNSUPPORTED)
    assert_problem(admin.post("/v1/knowledge-bases", content=body, headers=headers), 415, UNSUPPORTED)
    assert_nothing_stored(admin, kb_id)


def test_a_body_without_a_content_type_is_415(admin: httpx.Client, kb_id: str) -> None:
    assert_problem(admin.post(documents_url(kb_id), content=b'{"title": "t", "text": "x"}'), 415, UNSUPPORTED)
    assert_nothing_stored(admin, kb_id)


@pytest.mark.parametrize(
    ("filename", "content"),
    [
        ("photo.png", b"\x89PNG\r\n\x1a\n" + bytes(256)),
        ("report.pdf", b"\xff\xd8\xff\xe0 a JPEG named like a PDF"),
        ("legacy.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(256)),
        ("archive.txt.gz", b"\x1f\x8b\x08" + bytes(256)),
        ("no-extension", bytes(range(256)) * 4),
    ],
)
def test_an_unsupported_file_type_is_415_and_not_stored(
    admin: httpx.Client, kb_id: str, filename: str, content: bytes
) -> None:
    response = admin.post(documents_url(kb_id), files={"file": (filename, content, "application/octet-stream")})

    assert_problem(response, 415, UNSUPPORTED)
    assert_nothing_stored(admin, kb_id)


@pytest.mark.parametrize("filename", ["notes.txt", "notes.md"])
def test_an_upload_that_is_not_utf8_is_an_invalid_request(admin: httpx.Client, kb_id: str, filename: str) -> None:
    latin1 = "Café policy: déjà vu.".encode("latin-1")

    problem = assert_problem(admin.post(documents_url(kb_id), files={"file": (filename, latin1)}), 400, INVALID)

    assert "UTF-8" in problem["detail"]
    assert_nothing_stored(admin, kb_id)


@pytest.mark.parametrize("content", [b"", b"   \n\n\t ", b"\xef\xbb\xbf", b"\xef\xbb\xbf  \n"])
def test_an_empty_or_blank_upload_is_an_invalid_request(admin: httpx.Client, kb_id: str, content: bytes) -> None:
    assert_problem(admin.post(documents_url(kb_id), files={"file": ("empty.txt", content)}), 400, INVALID)
    assert_nothing_stored(admin, kb_id)


def test_multipart_without_a_file_is_an_invalid_request(admin: httpx.Client, kb_id: str) -> None:
    only_fields = admin.post(documents_url(kb_id), files={"title": (None, "Title only")})
    wrong_field = admin.post(documents_url(kb_id), files={"upload": ("notes.txt", b"Hello.", "text/plain")})
    file_as_text = admin.post(documents_url(kb_id), files={"file": (None, "I am a text field")})

    for response in (only_fields, wrong_field, file_as_text):
        assert_problem(response, 400, INVALID)
    assert_nothing_stored(admin, kb_id)


def test_multipart_with_two_files_is_an_invalid_request(admin: httpx.Client, kb_id: str) -> None:
    files = [("file", ("a.txt", b"First file.", "text/plain")), ("file", ("b.txt", b"Second file.", "text/plain"))]

    problem = assert_problem(admin.post(documents_url(kb_id), files=files), 400, INVALID)

    assert "exactly one file" in problem["detail"]
    assert_nothing_stored(admin, kb_id)


@pytest.mark.parametrize(
    "fields",
    [
        {"metadata": "not json"},
        {"metadata": "[1, 2]"},
        {"metadata": '"a string"'},
        {"id": "bad id"},
        {"id": "x" * 65},
        {"title": "t" * 501},
    ],
)
def test_bad_form_fields_of_an_upload_are_invalid_and_not_stored(
    admin: httpx.Client, kb_id: str, fields: dict[str, str]
) -> None:
    response = admin.post(documents_url(kb_id), files={"file": ("a.txt", b"Valid text.", "text/plain")}, data=fields)

    assert_problem(response, 400, INVALID)
    assert_nothing_stored(admin, kb_id)


def test_a_malformed_multipart_body_is_an_invalid_request(admin: httpx.Client, kb_id: str) -> None:
    without_boundary = admin.post(
        documents_url(kb_id), content=b"--x\r\n\r\nhello", headers={"Content-Type": "multipart/form-data"}
    )
    garbage = admin.post(
        documents_url(kb_id),
        content=b"this is not multipart at all",
        headers={"Content-Type": "multipart/form-data; boundary=abc"},
    )

    assert_problem(without_boundary, 400, INVALID)
    assert_problem(garbage, 400, INVALID)
    assert_nothing_stored(admin, kb_id)


# --- routes and methods ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/nope", "/v1", "/v1/nope", "/v1/knowledge-bases/kb_x/nope", "/v2/knowledge-bases", "/health"]
)
def test_an_unknown_route_is_a_404_problem(admin: httpx.Client, path: str) -> None:
    assert_problem(admin.get(path), 404, "not-found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v1/knowledge-bases"),
        ("DELETE", "/v1/knowledge-bases"),
        ("PATCH", "/v1/knowledge-bases/{kb}"),
        ("POST", "/v1/knowledge-bases/{kb}"),
        ("PUT", "/v1/knowledge-bases/{kb}/documents"),
        ("POST", "/v1/knowledge-bases/{kb}/documents/doc"),
        ("GET", "/v1/chat"),
        ("POST", "/health/live"),
        ("DELETE", "/health/ready"),
    ],
)
def test_a_wrong_method_is_a_405_problem(admin: httpx.Client, kb_id: str, method: str, path: str) -> None:
    response = admin.request(method, path.format(kb=kb_id), json={})

    assert_problem(response, 405, "method-not-allowed")
    assert_nothing_stored(admin, kb_id)


# --- body size --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server that accepts request bodies of at most 2000 bytes."""
    settings = make_settings(tmp_path_factory.mktemp("small"), RAGWATCH_MAX_BODY_BYTES=str(MAX_BODY))
    with live_server(settings) as running:
        yield running


@pytest.fixture
def small(small_server: LiveServer) -> Iterator[tuple[httpx.Client, str]]:
    with small_server.client(auth()) as client:
        kb_id = client.post("/v1/knowledge-bases", json={"name": "small"}).json()["id"]
        yield client, kb_id


def raw_post_headers_only(server: LiveServer, path: str, content_type: str, content_length: int) -> bytes:
    """Send a POST's headers announcing ``content_length`` bytes, send no body, and read the whole answer."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token()}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {content_length}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head.encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
            if b"\r\n\r\n" in received and received.rstrip().endswith(b"}"):
                break
    return received


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/v1/knowledge-bases/{kb}/documents", "application/json"),
        ("/v1/knowledge-bases/{kb}/documents", "multipart/form-data; boundary=abc"),
        ("/v1/knowledge-bases", "application/json"),
        ("/v1/chat", "application/json"),
    ],
)
def test_an_announced_body_over_the_limit_is_refused_with_413_before_it_is_sent(
    small_server: LiveServer, small: tuple[httpx.Client, str], path: str, content_type: str
) -> None:
    """The socket sends headers only: the 413 problem arrives although not one byte of the body was sent."""
    client, kb_id = small

    answer = raw_post_headers_only(small_server, path.format(kb=kb_id), content_type, 50_000_000)

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"content-type: application/problem+json" in head.lower()
    problem = json.loads(body)
    assert problem["type"] == PROBLEM_BASE + TOO_LARGE
    assert problem["status"] == 413
    assert_nothing_stored(client, kb_id)


def test_a_json_document_over_the_limit_is_413_and_not_stored(small: tuple[httpx.Client, str]) -> None:
    client, kb_id = small

    response = client.post(documents_url(kb_id), json={"title": "Big", "text": "word " * MAX_BODY})

    assert_problem(response, 413, TOO_LARGE)
    assert_nothing_stored(client, kb_id)


def test_an_upload_over_the_limit_is_413_and_not_stored(small: tuple[httpx.Client, str]) -> None:
    client, kb_id = small

    response = client.post(documents_url(kb_id), files={"file": ("big.txt", b"word " * MAX_BODY, "text/plain")})

    assert_problem(response, 413, TOO_LARGE)
    assert_nothing_stored(client, kb_id)


def test_a_streamed_body_over_the_limit_without_content_length_is_413(small: tuple[httpx.Client, str]) -> None:
    client, kb_id = small

    def chunks() -> Iterator[bytes]:
        yield b'{"title": "Big", "text": "'
        for _ in range(20):
            yield b"word " * 100
        yield b'"}'

    response = client.post(documents_url(kb_id), content=chunks(), headers={"Content-Type": "application/json"})

    assert "content-length" not in response.request.headers
    assert_problem(response, 413, TOO_LARGE)
    assert_nothing_stored(client, kb_id)


def test_a_body_just_under_the_limit_is_accepted(small: tuple[httpx.Client, str]) -> None:
    client, kb_id = small
    body = {"title": "Fits", "text": "x"}
    body["text"] = "y" * (MAX_BODY - len(json.dumps(body)))
    assert len(json.dumps(body)) <= MAX_BODY

    response = client.post(documents_url(kb_id), content=json.dumps(body), headers={"Content-Type": "application/json"})

    assert response.status_code == 201, response.text


def test_a_knowledge_base_survives_bad_input_unchanged(admin: httpx.Client, kb_id: str) -> None:
    """After a mix of every kind of bad ingest, the one good document is still the only one stored."""
    good = admin.post(documents_url(kb_id), json={"title": "Good", "text": "The only good document."}).json()
    attempts = [
        admin.post(documents_url(kb_id), content=b"{", headers={"Content-Type": "application/json"}),
        admin.post(documents_url(kb_id), json={"title": " ", "text": "x", "id": good["document_id"]}),
        admin.post(documents_url(kb_id), json={"title": "t", "text": " ", "id": good["document_id"]}),
        admin.post(documents_url(kb_id), files={"file": ("x.pdf", b"%PDF")}, data={"id": good["document_id"]}),
        admin.post(documents_url(kb_id), files={"file": ("x.txt", b"\xff")}, data={"id": good["document_id"]}),
    ]

    assert [response.status_code for response in attempts] == [400, 400, 400, 422, 400]
    detail = admin.get(f"/v1/knowledge-bases/{kb_id}").json()
    assert (detail["document_count"], detail["chunk_count"]) == (1, 1)
    assert admin.get(f"{documents_url(kb_id)}/{good['document_id']}").json()["text"] == "The only good document."
