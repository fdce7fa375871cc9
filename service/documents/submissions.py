"""What an ingest request submitted, and the document it makes: the JSON body, or one uploaded file with its
form fields (the file itself is parsed by :mod:`service.documents.uploads`).

The HTTP layer hands over the raw submission; turning it into a :class:`NewDocument` is parsing, timed by the
``ingest.parse`` span. Every mistake is the caller's: a 4xx problem, never a 500.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from service.chunking import Block
from service.errors import BadRequest
from service.models import ID_PATTERN, MAX_TITLE_LENGTH, DocumentCreate

__all__ = [
    "FileSubmission",
    "JsonSubmission",
    "NewDocument",
    "Submission",
    "form_fields",
    "parse_json",
    "submission_parts",
]

_decode_document = msgspec.json.Decoder(DocumentCreate).decode


@dataclass(frozen=True)
class NewDocument:
    title: str
    text: str
    metadata: dict[str, Any]
    document_id: str | None = None
    blocks: tuple[Block, ...] = ()
    """The text as the format structured it (pages, sections); empty: ``text`` is one block."""


@dataclass(frozen=True)
class JsonSubmission:
    body: bytes


@dataclass(frozen=True)
class FileSubmission:
    filename: str
    content: bytes
    fields: Mapping[str, object] = field(default_factory=dict)
    """The form's other fields (``title``, ``metadata``, ``id``), each its first value as sent."""


Submission = JsonSubmission | FileSubmission


def submission_parts(submission: Submission) -> list[bytes | str]:
    """What makes two submissions the same (for ``Idempotency-Key``): the JSON body as sent, or the file's
    name, content and form fields."""
    if isinstance(submission, JsonSubmission):
        return ["json", submission.body]
    fields = msgspec.json.encode({name: str(value) for name, value in sorted(submission.fields.items())})
    return ["file", submission.filename, submission.content, fields]


def parse_json(body: bytes) -> NewDocument:
    """The document of a JSON body (:class:`~service.models.DocumentCreate`)."""
    try:
        document = _decode_document(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise BadRequest(f"Invalid document: {exc}") from None
    except UnicodeDecodeError as exc:
        raise BadRequest(f"The request body is not valid UTF-8 (byte {exc.start}).") from None
    return NewDocument(
        title=document.title.strip(), text=document.text, metadata=document.metadata, document_id=document.id
    )


def form_fields(upload: FileSubmission) -> tuple[str | None, dict[str, Any], str | None]:
    """The upload's own ``title`` (``None``: take the file's name), ``metadata`` and ``id`` form fields."""
    title = _text_field(upload.fields, "title")
    if title is not None and len(title) > MAX_TITLE_LENGTH:
        raise BadRequest(f"The title is longer than {MAX_TITLE_LENGTH} characters.")
    return title, _metadata_field(upload.fields), _id_field(upload.fields)


def _text_field(fields: Mapping[str, object], name: str) -> str | None:
    value = fields.get(name)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _metadata_field(fields: Mapping[str, object]) -> dict[str, Any]:
    raw = _text_field(fields, "metadata")
    if raw is None:
        return {}
    try:
        return msgspec.json.decode(raw, type=dict[str, Any])
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise BadRequest("The form field 'metadata' must be a JSON object.") from None


def _id_field(fields: Mapping[str, object]) -> str | None:
    """The ``id`` field exactly as sent (an id is never trimmed into another one), or ``None`` when absent."""
    value = fields.get("id")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not re.fullmatch(ID_PATTERN, value):
        raise BadRequest(f"The form field 'id' must match {ID_PATTERN}.")
    return value
