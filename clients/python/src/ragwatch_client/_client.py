"""The synchronous client: :class:`Client`, and its resources."""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, Unpack

import httpx

from ragwatch_client import _api as api
from ragwatch_client import _models as models
from ragwatch_client._base import BaseClient
from ragwatch_client._core import Call, build_request
from ragwatch_client._errors import RagwatchError, connection_error
from ragwatch_client._files import FileInput, document_id_for, read_upload, supported_files
from ragwatch_client._sse import ChatEvents

__all__ = ["Client"]

T = TypeVar("T")


class KnowledgeBases:
    """``client.knowledge_bases``: the tenant's knowledge bases."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, name: str, description: str = "", *, idempotency_key: str | None = None) -> models.KnowledgeBase:
        """Create a knowledge base (admin). Retried safely: it carries an idempotency key (a new one if none)."""
        return self._client._run(api.create_knowledge_base(name, description, idempotency_key))

    def list(self, *, limit: int | None = None) -> Iterator[models.KnowledgeBase]:
        """Every knowledge base, fetching page after page (of ``limit``, 1 to 1000) as it is iterated."""
        return self._client._items(lambda cursor: api.knowledge_base_page(limit, cursor))

    def page(self, *, limit: int | None = None, cursor: str | None = None) -> models.Page[models.KnowledgeBase]:
        """One page of knowledge bases; its ``next_cursor`` asks for the next one."""
        return self._client._run(api.knowledge_base_page(limit, cursor))

    def get(self, kb_id: str) -> models.KnowledgeBaseDetail:
        """A knowledge base with its document and chunk counts."""
        return self._client._run(api.get_knowledge_base(kb_id))

    def delete(self, kb_id: str) -> None:
        """Delete a knowledge base and its documents (admin)."""
        self._client._run(api.delete_knowledge_base(kb_id))

    def reindex(self, kb_id: str) -> models.Reindexed:
        """Embed every chunk again with the server's embedder (admin), waiting as long as that takes."""
        return self._client._run(api.reindex(kb_id))


class Documents:
    """``client.documents``: the documents of a knowledge base."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        kb_id: str,
        title: str,
        text: str,
        **options: Unpack[api.DocumentOptions],
    ) -> models.DocumentCreated:
        """Ingest text (admin); an existing ``id`` is replaced."""
        return self._client._run(api.create_document(kb_id, title, text, **options))

    def upload(
        self,
        kb_id: str,
        file: FileInput,
        **options: Unpack[api.UploadOptions],
    ) -> models.DocumentCreated:
        """Upload a PDF, DOCX, HTML, Markdown or text file (admin): a path, or a file opened in binary mode.

        ``title`` defaults to the file's name without its suffix; ``filename`` names a file object."""
        name, content = read_upload(file, options.get("filename"))
        return self._client._run(api.upload_document(kb_id, name, content, **options))

    def upload_files(
        self, kb_id: str, paths: Iterable[str | os.PathLike[str]], *, concurrency: int = 4
    ) -> Iterator[models.UploadResult]:
        """Upload files, ``concurrency`` at a time, yielding each one's result in the order given. Each gets
        a stable id from its path (see :func:`document_id_for`): uploading it again replaces it."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        pool = ThreadPoolExecutor(max_workers=concurrency)
        try:
            yield from pool.map(lambda path: self._upload_one(kb_id, Path(path)), paths)
        finally:  # a caller that stops iterating early stops the uploads not yet started
            pool.shutdown(cancel_futures=True)

    def upload_folder(
        self, kb_id: str, folder: str | os.PathLike[str], *, concurrency: int = 4
    ) -> builtins.list[models.UploadResult]:
        """Upload every PDF, DOCX, HTML, Markdown and text file below ``folder``; one result per file, the
        refused ones with their error (the others are uploaded all the same)."""
        return builtins.list(self.upload_files(kb_id, supported_files(folder), concurrency=concurrency))

    def list(self, kb_id: str, *, limit: int | None = None) -> Iterator[models.DocumentSummary]:
        """Every document of a knowledge base, fetching page after page as it is iterated."""
        return self._client._items(lambda cursor: api.document_page(kb_id, limit, cursor))

    def page(
        self, kb_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> models.Page[models.DocumentSummary]:
        """One page of documents; its ``next_cursor`` asks for the next one."""
        return self._client._run(api.document_page(kb_id, limit, cursor))

    def get(self, kb_id: str, document_id: str) -> models.DocumentDetail:
        """A document with its full text."""
        return self._client._run(api.get_document(kb_id, document_id))

    def delete(self, kb_id: str, document_id: str) -> None:
        """Delete a document and its chunks (admin)."""
        self._client._run(api.delete_document(kb_id, document_id))

    def _upload_one(self, kb_id: str, path: Path) -> models.UploadResult:
        try:
            return models.UploadResult(path, self.upload(kb_id, path, title=path.name, id=document_id_for(path)))
        except (RagwatchError, OSError) as exc:
            return models.UploadResult(path, error=exc)


class Conversations:
    """``client.conversations``: the turns of the caller's conversations."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def get(self, conversation_id: str) -> models.Conversation:
        """A conversation with its turns, oldest first."""
        return self._client._run(api.get_conversation(conversation_id))

    def delete(self, conversation_id: str) -> None:
        """Forget a conversation."""
        self._client._run(api.delete_conversation(conversation_id))


class Client(BaseClient[httpx.Client, httpx.BaseTransport]):
    """A client of the ragwatch API. Use it as a context manager, or call :meth:`close`.

    Every error it raises is a :class:`RagwatchError`.
    """

    knowledge_bases = cached_property(KnowledgeBases)
    documents = cached_property(Documents)
    conversations = cached_property(Conversations)

    def search(self, kb_id: str, query: str, *, top_k: int | None = None) -> models.SearchResults:
        """The passages of a knowledge base that match ``query``, best first (``top_k``: 1 to 100)."""
        return self._run(api.search(kb_id, query, top_k))

    def chat(
        self, kb_id: str, question: str, *, top_k: int | None = None, conversation_id: str | None = None
    ) -> models.ChatResponse:
        """A cited answer from a knowledge base; ``conversation_id`` records the turn in that conversation
        (and reads the question in its context)."""
        return self._run(api.chat(kb_id, question, top_k, conversation_id))

    def feedback(self, trace_id: str, rating: Literal["up", "down"], comment: str = "") -> models.FeedbackAccepted:
        """Rate the answer of ``trace_id`` (``ChatResponse.trace_id``, or a completion's) up or down."""
        return self._run(api.feedback(trace_id, rating, comment))

    def chat_stream(
        self, kb_id: str, question: str, *, top_k: int | None = None, conversation_id: str | None = None
    ) -> Iterator[models.ChatEvent]:
        """The answer as it is written: :class:`AnswerDelta` events, then one :class:`AnswerDone`. The request
        is sent when iteration starts; an ``error`` event is raised as its :class:`RagwatchError`."""
        response = self._send(api.chat(kb_id, question, top_k, conversation_id, stream=True), stream=True)
        events = ChatEvents(response)
        try:
            for line in response.iter_lines():
                yield from events.feed(line)
            yield from events.end()
        except httpx.TransportError as exc:
            raise connection_error(exc) from exc
        finally:
            response.close()

    def close(self) -> None:
        """Close the connections (unless the httpx client was given by the caller)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _new_http(self, transport: httpx.BaseTransport | None) -> httpx.Client:
        return httpx.Client(transport=transport)

    def _run(self, call: Call[T]) -> T:
        return call.decode(self._send(call).content)

    def _items(self, page_of: Callable[[str | None], Call[models.Page[T]]]) -> Iterator[T]:
        cursor: str | None = None
        while True:
            page = self._run(page_of(cursor))
            yield from page.data
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def _send(self, call: Call[Any], *, stream: bool = False) -> httpx.Response:
        """The successful response of ``call``, after the retries its failures allow."""
        retrying = self._options.retrying(call)
        while True:
            try:
                response = self._http.send(build_request(self._http, self._options, call), stream=stream)
                if response.is_error:
                    response.read()
            except httpx.TransportError as exc:
                time.sleep(retrying.after_failure(exc))
                continue
            if not response.is_error:
                return response
            time.sleep(retrying.after_response(response))
