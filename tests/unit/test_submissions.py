"""Parsing what an ingest request submitted: a JSON document or one uploaded text file."""

from __future__ import annotations

import pytest

from service.documents import FileSubmission, JsonSubmission, NewDocument
from service.documents.submissions import parse_submission
from service.errors import BadRequest, UnsupportedMediaType


def test_a_json_document_is_taken_with_its_title_trimmed() -> None:
    body = b'{"title": "  Handbook ", "text": "Vacation policy.", "metadata": {"team": "hr"}, "id": "hb-1"}'

    assert parse_submission(JsonSubmission(body)) == NewDocument(
        title="Handbook", text="Vacation policy.", metadata={"team": "hr"}, document_id="hb-1"
    )


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b'{"title": "t"}',
        b'{"title": "t", "text": "   "}',
        b'{"title": "t", "text": "x", "colour": "red"}',
        b'{"title": "t", "text": "x", "id": "a b"}',
        b'["not", "an", "object"]',
    ],
)
def test_an_invalid_json_document_is_a_bad_request(body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_submission(JsonSubmission(body))


def test_an_uploaded_markdown_file_is_decoded_and_named_after_the_file() -> None:
    upload = FileSubmission(filename="notes/setup.md", content="\ufeff# Setup\n\nRun make.".encode())

    document = parse_submission(upload)

    assert document == NewDocument(title="setup", text="# Setup\n\nRun make.", metadata={}, document_id=None)


def test_form_fields_give_the_title_metadata_and_exact_id() -> None:
    upload = FileSubmission(
        filename="a.txt", content=b"text", fields={"title": " Title ", "metadata": '{"k": 1}', "id": "doc-7"}
    )

    assert parse_submission(upload) == NewDocument(title="Title", text="text", metadata={"k": 1}, document_id="doc-7")


@pytest.mark.parametrize(
    ("upload", "error"),
    [
        (FileSubmission("report.pdf", b"%PDF-1.7"), UnsupportedMediaType),
        (FileSubmission("noextension", b"text"), UnsupportedMediaType),
        (FileSubmission("a.txt", b"\xff\xfe\x00bad"), BadRequest),
        (FileSubmission("a.txt", b"  \n "), BadRequest),
        (FileSubmission("a.txt", b"text", {"metadata": "[1, 2]"}), BadRequest),
        (FileSubmission("a.txt", b"text", {"id": " doc-7"}), BadRequest),
        (FileSubmission("a.txt", b"text", {"title": "x" * 501}), BadRequest),
    ],
)
def test_a_file_that_cannot_be_ingested_is_refused_with_a_4xx(upload: FileSubmission, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_submission(upload)
