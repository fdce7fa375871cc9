"""Every operation of the API as a :class:`Call`: the routes, their bodies and how each answer decodes.

Both clients send these; nothing here does I/O. Ids are quoted into paths, so an id can never reach another
route. Creations carry an ``Idempotency-Key`` (the caller's, else a new random one), so that the retries
of one call are answered with the first attempt's result instead of creating twice.
"""

from __future__ import annotations

import json
import mimetypes
import uuid
from collections.abc import Mapping
from typing import Any, TypedDict, Unpack
from urllib.parse import quote

import msgspec

from ragwatch_client import _models as models
from ragwatch_client._core import Call, decoder, no_content, page_decoder

__all__ = [
    "DocumentOptions",
    "UploadOptions",
    "chat",
    "create_document",
    "create_knowledge_base",
    "delete_conversation",
    "delete_document",
    "delete_knowledge_base",
    "document_page",
    "feedback",
    "get_conversation",
    "get_document",
    "get_knowledge_base",
    "knowledge_base_page",
    "reindex",
    "search",
    "upload_document",
]


class _KnowledgeBaseCreate(msgspec.Struct):
    name: str
    description: str


class _DocumentCreate(msgspec.Struct, omit_defaults=True):
    title: str
    text: str
    metadata: dict[str, Any] | None = None
    id: str | None = None


class _Search(msgspec.Struct, omit_defaults=True):
    query: str
    top_k: int | None = None


class _Chat(msgspec.Struct, omit_defaults=True):
    kb_id: str
    question: str
    top_k: int | None = None
    conversation_id: str | None = None
    stream: bool = False


_encode = msgspec.json.Encoder().encode
_KB = "/v1/knowledge-bases"


def _segment(value: str) -> str:
    """``value`` as one path segment: never empty, and never ``.`` or ``..``, which URLs resolve away."""
    if not value:
        raise ValueError("an id cannot be empty")
    return quote(value, safe="") if value.strip(".") else "%2E" * len(value)


def _kb(kb_id: str) -> str:
    return f"{_KB}/{_segment(kb_id)}"


def _documents(kb_id: str) -> str:
    return f"{_kb(kb_id)}/documents"


def _idempotency(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key or str(uuid.uuid4())}


def _page_params(limit: int | None, cursor: str | None) -> dict[str, str | int]:
    return {name: value for name, value in (("limit", limit), ("cursor", cursor)) if value is not None}


# --- knowledge bases ---------------------------------------------------------------------------------------


def create_knowledge_base(name: str, description: str, idempotency_key: str | None) -> Call[models.KnowledgeBase]:
    body = _encode(_KnowledgeBaseCreate(name=name, description=description))
    return Call("POST", _KB, _decode_kb, body=body, headers=_idempotency(idempotency_key))


def knowledge_base_page(limit: int | None, cursor: str | None) -> Call[models.Page[models.KnowledgeBase]]:
    return Call("GET", _KB, _decode_kb_page, params=_page_params(limit, cursor))


def get_knowledge_base(kb_id: str) -> Call[models.KnowledgeBaseDetail]:
    return Call("GET", _kb(kb_id), _decode_kb_detail)


def delete_knowledge_base(kb_id: str) -> Call[None]:
    return Call("DELETE", _kb(kb_id), no_content)


def reindex(kb_id: str) -> Call[models.Reindexed]:
    """Safe to send twice: a knowledge base already on the server's embedder is left as it is."""
    return Call("POST", f"{_kb(kb_id)}/reindex", _decode_reindexed, long_running=True)


# --- documents ---------------------------------------------------------------------------------------------


class DocumentOptions(TypedDict, total=False):
    """The optional fields of a new document."""

    metadata: Mapping[str, Any]
    """A JSON object kept with the document."""
    id: str
    """The document's id (letters, digits, ``_``, ``.``, ``-``; up to 64): an existing one is replaced.
    Default: a new id."""
    idempotency_key: str
    """Sent as ``Idempotency-Key``: a repeat with the same key is answered with the first one's result.
    Default: a new random key for each call, which its retries reuse."""


class UploadOptions(DocumentOptions, total=False):
    """The optional fields of an uploaded file."""

    title: str
    """Default: the file's name without its suffix (``security`` for ``security.pdf``)."""
    filename: str
    """The name sent for a file object (default: its ``name``); the server tells text formats apart by it."""


def create_document(
    kb_id: str, title: str, text: str, **options: Unpack[DocumentOptions]
) -> Call[models.DocumentCreated]:
    metadata = dict(options.get("metadata") or {}) or None
    body = _encode(_DocumentCreate(title=title, text=text, metadata=metadata, id=options.get("id")))
    headers = _idempotency(options.get("idempotency_key"))
    return Call("POST", _documents(kb_id), _decode_created, body=body, headers=headers)


def upload_document(
    kb_id: str, name: str, content: bytes, **options: Unpack[UploadOptions]
) -> Call[models.DocumentCreated]:
    """``name``: the file's name to send (``options["filename"]`` is not read)."""
    metadata = options.get("metadata")
    fields = {"title": options.get("title"), "metadata": json.dumps(dict(metadata)) if metadata else None}
    fields["id"] = options.get("id")
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Call(
        "POST",
        _documents(kb_id),
        _decode_created,
        form={field: value for field, value in fields.items() if value is not None},
        file=(name, content, media_type),
        headers=_idempotency(options.get("idempotency_key")),
    )


def document_page(kb_id: str, limit: int | None, cursor: str | None) -> Call[models.Page[models.DocumentSummary]]:
    return Call("GET", _documents(kb_id), _decode_document_page, params=_page_params(limit, cursor))


def get_document(kb_id: str, document_id: str) -> Call[models.DocumentDetail]:
    return Call("GET", f"{_documents(kb_id)}/{_segment(document_id)}", _decode_document)


def delete_document(kb_id: str, document_id: str) -> Call[None]:
    return Call("DELETE", f"{_documents(kb_id)}/{_segment(document_id)}", no_content)


# --- search and chat ---------------------------------------------------------------------------------------


def search(kb_id: str, query: str, top_k: int | None) -> Call[models.SearchResults]:
    """Reads only, so it is safe to send twice."""
    body = _encode(_Search(query=query, top_k=top_k))
    return Call("POST", f"{_kb(kb_id)}/search", _decode_search, body=body)


def chat(
    kb_id: str, question: str, top_k: int | None, conversation_id: str | None, *, stream: bool = False
) -> Call[models.ChatResponse]:
    """Never sent twice after a connection failure: the first attempt may have been answered (and billed)."""
    body = _encode(_Chat(kb_id=kb_id, question=question, top_k=top_k, conversation_id=conversation_id, stream=stream))
    headers = {"Accept": "text/event-stream"} if stream else {}
    return Call("POST", "/v1/chat", _decode_chat, body=body, headers=headers, retry_safe=False)


class _Feedback(msgspec.Struct, omit_defaults=True):
    trace_id: str
    rating: str
    comment: str = ""


def feedback(trace_id: str, rating: str, comment: str) -> Call[models.FeedbackAccepted]:
    """Rating an answer twice counts twice, so it is not sent again after a connection failure."""
    body = _encode(_Feedback(trace_id=trace_id, rating=rating, comment=comment))
    return Call("POST", "/v1/feedback", _decode_feedback, body=body, retry_safe=False)


# --- conversations -----------------------------------------------------------------------------------------


def get_conversation(conversation_id: str) -> Call[models.Conversation]:
    return Call("GET", f"/v1/conversations/{_segment(conversation_id)}", _decode_conversation)


def delete_conversation(conversation_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/conversations/{_segment(conversation_id)}", no_content)


_decode_kb = decoder(models.KnowledgeBase)
_decode_kb_page = page_decoder(models.KnowledgeBase)
_decode_kb_detail = decoder(models.KnowledgeBaseDetail)
_decode_reindexed = decoder(models.Reindexed)
_decode_created = decoder(models.DocumentCreated)
_decode_document_page = page_decoder(models.DocumentSummary)
_decode_document = decoder(models.DocumentDetail)
_decode_search = decoder(models.SearchResults)
_decode_chat = decoder(models.ChatResponse)
_decode_conversation = decoder(models.Conversation)
_decode_feedback = decoder(models.FeedbackAccepted)
