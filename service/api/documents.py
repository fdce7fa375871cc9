"""``/v1/knowledge-bases/{kb_id}/documents``: ingest (JSON or one uploaded file), list, read, delete."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency, Provide
from litestar.openapi.spec import OpenAPIFormat, OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.params import FromPath

from service.admission import admitted_as
from service.api.hooks import rate_limited
from service.api.idempotency import IdempotencyKey, created
from service.api.paging import Cursor, Limit
from service.audit import audited
from service.auth import ADMINS_ONLY, Principal
from service.documents import Documents, FileSubmission, JsonSubmission, Submission
from service.errors import BadRequest, UnsupportedMediaType, problem_responses
from service.models import (
    ID_PATTERN,
    MAX_TITLE_LENGTH,
    DocumentCreate,
    DocumentCreated,
    DocumentDetail,
    DocumentPage,
)
from service.pagination import DEFAULT_LIMIT

__all__ = ["DocumentController"]

_ERRORS = problem_responses(400, 401, 403, 404)


async def read_submission(request: Request[Any, Any, Any]) -> Submission:
    """What the request submits, unparsed: a JSON body, or the one file of a multipart form with its fields."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json":
        return JsonSubmission(await request.body())
    if media_type != "multipart/form-data":
        raise UnsupportedMediaType(
            "Send application/json, or multipart/form-data with a PDF, DOCX, HTML, Markdown or text file."
        )
    form = await request.form()
    files = [value for value in form.getall("file") if isinstance(value, UploadFile)] if "file" in form else []
    if len(files) != 1:
        raise BadRequest("Upload exactly one file, in a form field named 'file'.")
    fields = {name: form.get(name) for name in ("title", "metadata", "id") if name in form}
    return FileSubmission(filename=files[0].filename or "", content=await files[0].read(), fields=fields)


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
                    "file": Schema(
                        type=OpenAPIType.STRING,
                        format=OpenAPIFormat.BINARY,
                        description="PDF, DOCX, HTML, Markdown or plain text (detected from the content)",
                    ),
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
            description="A document as JSON, or one uploaded PDF, DOCX, HTML, Markdown or text file",
            content={**json_body, "multipart/form-data": upload},
        )


class DocumentController(Controller):
    path = "/knowledge-bases/{kb_id:str}/documents"
    tags = ["documents"]

    @post(
        opt={
            **ADMINS_ONLY,
            **admitted_as("ingest"),
            **audited("document.ingest", target="document_id", replacing="document.replace"),
        },
        guards=[rate_limited("ingest")],
        operation_class=IngestOperation,
        dependencies={"json_body_schema": Provide(_json_body_schema)},
        summary="Ingest a document; an existing id replaces it atomically",
        responses=problem_responses(400, 401, 403, 404, 409, 413, 415, 422, 429, 503),
    )
    async def ingest(
        self,
        kb_id: FromPath[str],
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        documents: NamedDependency[Documents],
        idempotency_key: IdempotencyKey = None,
    ) -> Response[DocumentCreated]:
        return created(await documents.ingest(principal, kb_id, read_submission(request), idempotency_key))

    @get(summary="List a knowledge base's documents, a page at a time", responses=_ERRORS)
    async def list(
        self,
        kb_id: FromPath[str],
        principal: NamedDependency[Principal],
        documents: NamedDependency[Documents],
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> DocumentPage:
        return await documents.list_page(principal, kb_id, limit, cursor)

    @get("/{document_id:str}", summary="A document with its full text", responses=_ERRORS)
    async def detail(
        self,
        kb_id: FromPath[str],
        document_id: FromPath[str],
        principal: NamedDependency[Principal],
        documents: NamedDependency[Documents],
    ) -> DocumentDetail:
        return await documents.get(principal, kb_id, document_id)

    @delete(
        "/{document_id:str}",
        opt={**ADMINS_ONLY, **audited("document.delete", target="document_id")},
        summary="Delete a document and its chunks",
        responses=_ERRORS,
    )
    async def remove(
        self,
        kb_id: FromPath[str],
        document_id: FromPath[str],
        principal: NamedDependency[Principal],
        documents: NamedDependency[Documents],
    ) -> None:
        await documents.delete(principal, kb_id, document_id)
