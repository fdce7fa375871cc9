"""What an ingest request submitted: a JSON document, or an uploaded file's form fields."""

from __future__ import annotations

import pytest

from service.documents import FileSubmission, NewDocument
from service.documents.submissions import form_fields, parse_json
from service.errors import BadRequest


def test_a_json_document_is_taken_with_its_title_trimmed() -> None:
    body = b'{"title": "  Handbook ", "text": "Vacation policy.", "metadata": {"team": "hr"}, "id": "hb-1"}'

    assert parse_json(body) == NewDocument(
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
        parse_json(body)


def test_form_fields_give_the_title_metadata_and_exact_id() -> None:
    upload = FileSubmission("a.txt", b"text", {"title": " Title ", "metadata": '{"k": 1}', "id": "doc-7"})

    assert form_fields(upload) == ("Title", {"k": 1}, "doc-7")


def test_absent_form_fields_leave_the_title_to_the_file_name() -> None:
    assert form_fields(FileSubmission("a.txt", b"text")) == (None, {}, None)


@pytest.mark.parametrize(
    "fields", [{"metadata": "[1, 2]"}, {"metadata": "{"}, {"id": " doc-7"}, {"id": "a/b"}, {"title": "x" * 501}]
)
def test_form_fields_that_cannot_be_used_are_a_bad_request(fields: dict[str, object]) -> None:
    with pytest.raises(BadRequest):
        form_fields(FileSubmission("a.txt", b"text", fields))
