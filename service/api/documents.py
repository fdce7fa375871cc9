"""``/v1/knowledge-bases/{kb_id}/documents``: ingest (JSON or one uploaded file), list, read, delete."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency, Provide
from litestar.openapi.spec import OpenAPIFormat, OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.params import FromPath

from service.api.hooks import rate_limited
from service.auth import Principal, requires_admin, requires_member
from service.errors import BadRequest, NotFound, UnsupportedMediaType, problem_responses
from service.models import (
    ID_PATTERN,
    MAX_TITLE_LENGTH,
    DocumentCreate,
    DocumentCreated,
    DocumentDetail,
    DocumentSummary,
)
from service.rag import NewDocument, RagPipeline
from service.store import DocumentRecord
from telemetry import stage

__all__ = ["DocumentController"]

TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown"})
_ERRORS = problem_responses(400, 401, 403, 404)


async def read_new_document(request: Request[Any, Any, Any]) -> NewDocument:
    """The document in a JSON body or in a multipart upload with one ``file`` part."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json":
        try:
            body = msgspec.json.decode(await request.body(), type=DocumentCreate)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise BadRequest(f"Invalid document: {exc}") from None
        except UnicodeDecodeError as exc:
            raise BadRequest(f"The request body is not valid UTF-8 (byte {exc.start}).") from None
        return NewDocument(title=body.title.strip(), text=body.text, metadata=body.metadata, document_id=body.id)
    if media_type == "multipart/form-data":
        return await _read_upload(request)
    raise UnsupportedMediaType("Send application/json or multipart/form-data with a .txt or .md file.")


async def _read_upload(request: Request[Any, Any, Any]) -> NewDocument:
    form = await request.form()
    files = [value for value in form.getall("file") if isinstance(value, UploadFile)] if "file" in form else []
    if len(files) != 1:
        raise BadRequest("Upload exactly one file, in a form field named 'file'.")
    upload = files[0]
    suffix = PurePath(upload.filename or "").suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise UnsupportedMediaType(f"Only .txt and .md files can be ingested, not {upload.filename!r}.")
    try:
        text = (await upload.read()).decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"The file is not valid UTF-8 (byte {exc.start}).") from None
    if not text.strip():
        raise BadRequest("The file is empty.")
    title = _form_text(form, "title") or PurePath(upload.filename or "upload").stem
    if len(title) > MAX_TITLE_LENGTH:
        raise BadRequest(f"The title is longer than {MAX_TITLE_LENGTH} characters.")
    return NewDocument(
        title=title,
        text=text,
        metadata=_form_metadata(form),
        document_id=_form_id(form),
    )


def _form_text(form: Any, name: str) -> str | None:
    value = form.get(name)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _form_metadata(form: Any) -> dict[str, Any]:
    raw = _form_text(form, "metadata")
    if raw is None:
        return {}
    try:
        return msgspec.json.decode(raw, type=dict[str, Any])
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise BadRequest("The form field 'metadata' must be a JSON object.") from None


def _form_id(form: Any) -> str | None:
    """The ``id`` field exactly as sent (an id is never trimmed into another one), or ``None`` when absent."""
    value = form.get("id")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not re.fullmatch(ID_PATTERN, value):
        raise BadRequest(f"The form field 'id' must match {ID_PATTERN}.")
    return value


async def _json_body_schema(data: DocumentCreate) -> DocumentCreate:
    """Never called: declared as a dependency of the ingest route (which does not ask for it) so that Litestar
    documents the JSON body as a reference to the ``DocumentCreate`` model. The body is read by hand."""
    return data


@dataclass
class IngestOperation(Operation):
    """OpenAPI for the ingest route, whose body is read by hand because it takes two media types."""

    def __post_init__(self) -> None:
        json_body = self.request_body.content if isinstance(self.request_body, RequestBody) else {}
        upload = OpenAPIMediaType(
            schema=Schema(
                type=OpenAPIType.OBJECT,
                required=["file"],
                properties={
                    "file": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY, description=".txt or .md"),
                    "title": Schema(
                        type=OpenAPIType.STRING, max_length=MAX_TITLE_LENGTH, description="default: the file name"
                    ),
                    "metadata": Schema(type=OpenAPIType.STRING, description="a JSON object"),
                    "id": Schema(type=OpenAPIType.STRING, pattern=ID_PATTERN),
                },
            )
        )
        self.request_body = RequestBody(
            required=True,
            description="A document as JSON, or one uploaded .txt or .md file",
            content={**json_body, "multipart/form-data": upload},
        )


def _summary(record: DocumentRecord) -> DocumentSummary:
    return DocumentSummary(
        document_id=record.document_id,
        title=record.title,
        chunks=record.chunks,
        bytes=record.bytes,
        metadata=record.metadata,
        created_at=record.created_at,
    )


class DocumentController(Controller):
    path = "/knowledge-bases/{kb_id:str}/documents"
    tags = ["documents"]
    guards = [requires_member]

    @post(
        guards=[requires_admin, rate_limited("ingest")],
        operation_class=IngestOperation,
        dependencies={"json_body_schema": Provide(_json_body_schema)},
        summary="Ingest a document; an existing id replaces it atomically",
        responses=problem_responses(400, 401, 403, 404, 413, 415, 429, 503),
    )
    async def ingest(
        self,
        kb_id: FromPath[str],
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        pipeline: NamedDependency[RagPipeline],
    ) -> DocumentCreated:
        with stage(pipeline.telemetry, "ingest.parse"):
            document = await read_new_document(request)
        return await pipeline.ingest(principal, kb_id, document)

    @get(summary="List a knowledge base's documents", responses=_ERRORS)
    async def list(
        self, kb_id: FromPath[str], principal: NamedDependency[Principal], pipeline: NamedDependency[RagPipeline]
    ) -> list[DocumentSummary]:
        await pipeline.knowledge_base(principal, kb_id)
        return [_summary(record) for record in await pipeline.store.list_documents(principal.tenant_id, kb_id)]

    @get("/{document_id:str}", summary="A document with its full text", responses=_ERRORS)
    async def detail(
        self,
        kb_id: FromPath[str],
        document_id: FromPath[str],
        principal: NamedDependency[Principal],
        pipeline: NamedDependency[RagPipeline],
    ) -> DocumentDetail:
        await pipeline.knowledge_base(principal, kb_id)
        record = await pipeline.store.get_document(principal.tenant_id, kb_id, document_id)
        if record is None:
            raise NotFound(f"No document {document_id!r} in knowledge base {kb_id!r}.")
        return DocumentDetail(**msgspec.structs.asdict(_summary(record)), text=record.text or "")

    @delete(
        "/{document_id:str}", guards=[requires_admin], summary="Delete a document and its chunks", responses=_ERRORS
    )
    async def remove(
        self,
        kb_id: FromPath[str],
        document_id: FromPath[str],
        principal: NamedDependency[Principal],
        pipeline: NamedDependency[RagPipeline],
    ) -> None:
        await pipeline.delete_document(principal, kb_id, document_id)
