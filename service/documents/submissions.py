"""What an ingest request submitted, and the document it makes: the JSON body or the one uploaded file.

The HTTP layer hands over the raw submission; turning it into a :class:`NewDocument` (decoding, checking the
file type and the form fields) is parsing, done here and timed by the ``ingest.parse`` span. Every mistake
is the caller's: a :class:`~service.errors.BadRequest` or an
:class:`~service.errors.UnsupportedMediaType`, never a 500.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import msgspec

from service.errors import BadRequest, UnsupportedMediaType
from service.models import ID_PATTERN, MAX_TITLE_LENGTH, DocumentCreate

__all__ = ["TEXT_SUFFIXES", "FileSubmission", "JsonSubmission", "NewDocument", "Submission", "parse_submission"]

TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown"})
_decode_document = msgspec.json.Decoder(DocumentCreate).decode


@dataclass(frozen=True)
class NewDocument:
    title: str
    text: str
    metadata: dict[str, Any]
    document_id: str | None = None


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


def parse_submission(submission: Submission) -> NewDocument:
    if isinstance(submission, JsonSubmission):
        return _parse_json(submission.body)
    return _parse_file(submission)


def _parse_json(body: bytes) -> NewDocument:
    try:
        document = _decode_document(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise BadRequest(f"Invalid document: {exc}") from None
    except UnicodeDecodeError as exc:
        raise BadRequest(f"The request body is not valid UTF-8 (byte {exc.start}).") from None
    return NewDocument(
        title=document.title.strip(), text=document.text, metadata=document.metadata, document_id=document.id
    )


def _parse_file(upload: FileSubmission) -> NewDocument:
    suffix = PurePath(upload.filename).suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise UnsupportedMediaType(f"Only .txt and .md files can be ingested, not {upload.filename!r}.")
    try:
        text = upload.content.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"The file is not valid UTF-8 (byte {exc.start}).") from None
    if not text.strip():
        raise BadRequest("The file is empty.")
    title = _text_field(upload.fields, "title") or PurePath(upload.filename or "upload").stem
    if len(title) > MAX_TITLE_LENGTH:
        raise BadRequest(f"The title is longer than {MAX_TITLE_LENGTH} characters.")
    return NewDocument(
        title=title, text=text, metadata=_metadata_field(upload.fields), document_id=_id_field(upload.fields)
    )


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
