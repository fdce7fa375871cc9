"""The asynchronous client: :class:`AsyncClient`, and its resources (asyncio).

Every method is its :class:`Client` twin's, awaited: lists and streams are ``async for`` iterators.
"""

from __future__ import annotations

import asyncio
import builtins
import os
from collections.abc import AsyncIterator, Callable, Iterable
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

__all__ = ["AsyncClient"]

T = TypeVar("T")


class AsyncKnowledgeBases:
    """``client.knowledge_bases``, awaited."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self, name: str, description: str = "", *, idempotency_key: str | None = None
    ) -> models.KnowledgeBase:
        """Create a knowledge base (admin), with an idempotency key."""
        return await self._client._run(api.create_knowledge_base(name, description, idempotency_key))

    def list(self, *, limit: int | None = None) -> AsyncIterator[models.KnowledgeBase]:
        """Every knowledge base, page after page: ``async for``."""
        return self._client._items(lambda cursor: api.knowledge_base_page(limit, cursor))

    async def page(self, *, limit: int | None = None, cursor: str | None = None) -> models.Page[models.KnowledgeBase]:
        """One page of knowledge bases."""
        return await self._client._run(api.knowledge_base_page(limit, cursor))

    async def get(self, kb_id: str) -> models.KnowledgeBaseDetail:
        """A knowledge base and its counts."""
        return await self._client._run(api.get_knowledge_base(kb_id))

    async def delete(self, kb_id: str) -> None:
        """Delete a knowledge base (admin)."""
        await self._client._run(api.delete_knowledge_base(kb_id))

    async def reindex(self, kb_id: str) -> models.Reindexed:
        """Embed every chunk again (admin)."""
        return await self._client._run(api.reindex(kb_id))


class AsyncDocuments:
    """``client.documents``, awaited."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        kb_id: str,
        title: str,
        text: str,
        **options: Unpack[api.DocumentOptions],
    ) -> models.DocumentCreated:
        """Ingest text (admin)."""
        return await self._client._run(api.create_document(kb_id, title, text, **options))

    async def upload(
        self,
        kb_id: str,
        file: FileInput,
        **options: Unpack[api.UploadOptions],
    ) -> models.DocumentCreated:
        """Upload one file (admin); it is read in a worker thread."""
        name, content = await asyncio.to_thread(read_upload, file, options.get("filename"))
        return await self._client._run(api.upload_document(kb_id, name, content, **options))

    async def upload_files(
        self, kb_id: str, paths: Iterable[str | os.PathLike[str]], *, concurrency: int = 4
    ) -> AsyncIterator[models.UploadResult]:
        """Upload files, ``concurrency`` at a time; each result in the order given: ``async for``."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        slots = asyncio.Semaphore(concurrency)

        async def upload(path: Path) -> models.UploadResult:
            async with slots:
                return await self._upload_one(kb_id, path)

        tasks = [asyncio.ensure_future(upload(Path(path))) for path in paths]
        try:
            for task in tasks:
                yield await task
        finally:
            for task in tasks:
                task.cancel()

    async def upload_folder(
        self, kb_id: str, folder: str | os.PathLike[str], *, concurrency: int = 4
    ) -> builtins.list[models.UploadResult]:
        """Upload every supported file below ``folder``; one result per file."""
        files = await asyncio.to_thread(lambda: builtins.list(supported_files(folder)))
        return [result async for result in self.upload_files(kb_id, files, concurrency=concurrency)]

    def list(self, kb_id: str, *, limit: int | None = None) -> AsyncIterator[models.DocumentSummary]:
        """Every document, page after page: ``async for``."""
        return self._client._items(lambda cursor: api.document_page(kb_id, limit, cursor))

    async def page(
        self, kb_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> models.Page[models.DocumentSummary]:
        """One page of documents."""
        return await self._client._run(api.document_page(kb_id, limit, cursor))

    async def get(self, kb_id: str, document_id: str) -> models.DocumentDetail:
        """A document and its text."""
        return await self._client._run(api.get_document(kb_id, document_id))

    async def delete(self, kb_id: str, document_id: str) -> None:
        """Delete a document (admin)."""
        await self._client._run(api.delete_document(kb_id, document_id))

    async def _upload_one(self, kb_id: str, path: Path) -> models.UploadResult:
        try:
            return models.UploadResult(path, await self.upload(kb_id, path, title=path.name, id=document_id_for(path)))
        except (RagwatchError, OSError) as exc:
            return models.UploadResult(path, error=exc)


class AsyncConversations:
    """``client.conversations``, awaited."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def get(self, conversation_id: str) -> models.Conversation:
        """A conversation and its turns."""
        return await self._client._run(api.get_conversation(conversation_id))

    async def delete(self, conversation_id: str) -> None:
        """Forget a conversation."""
        await self._client._run(api.delete_conversation(conversation_id))


class AsyncClient(BaseClient[httpx.AsyncClient, httpx.AsyncBaseTransport]):
    """The asynchronous client: ``async with AsyncClient(...) as client``, or ``await client.aclose()``."""

    knowledge_bases = cached_property(AsyncKnowledgeBases)
    documents = cached_property(AsyncDocuments)
    conversations = cached_property(AsyncConversations)

    async def search(self, kb_id: str, query: str, *, top_k: int | None = None) -> models.SearchResults:
        """Passages matching ``query``, best first."""
        return await self._run(api.search(kb_id, query, top_k))

    async def feedback(
        self, trace_id: str, rating: Literal["up", "down"], comment: str = ""
    ) -> models.FeedbackAccepted:
        """Rate the answer of ``trace_id`` up or down."""
        return await self._run(api.feedback(trace_id, rating, comment))

    async def chat(
        self, kb_id: str, question: str, *, top_k: int | None = None, conversation_id: str | None = None
    ) -> models.ChatResponse:
        """A cited answer."""
        return await self._run(api.chat(kb_id, question, top_k, conversation_id))

    async def chat_stream(
        self, kb_id: str, question: str, *, top_k: int | None = None, conversation_id: str | None = None
    ) -> AsyncIterator[models.ChatEvent]:
        """The answer as it is written: ``async for`` its deltas, then its :class:`AnswerDone`."""
        response = await self._send(api.chat(kb_id, question, top_k, conversation_id, stream=True), stream=True)
        events = ChatEvents(response)
        try:
            async for line in response.aiter_lines():
                for event in events.feed(line):
                    yield event
            for event in events.end():
                yield event
        except httpx.TransportError as exc:
            raise connection_error(exc) from exc
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        """Close the connections (unless the httpx client was given by the caller)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()

    def _new_http(self, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=transport)

    async def _run(self, call: Call[T]) -> T:
        return call.decode((await self._send(call)).content)

    async def _items(self, page_of: Callable[[str | None], Call[models.Page[T]]]) -> AsyncIterator[T]:
        cursor: str | None = None
        while True:
            page = await self._run(page_of(cursor))
            for item in page.data:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def _send(self, call: Call[Any], *, stream: bool = False) -> httpx.Response:
        retrying = self._options.retrying(call)
        while True:
            try:
                response = await self._http.send(build_request(self._http, self._options, call), stream=stream)
                if response.is_error:
                    await response.aread()
            except httpx.TransportError as exc:
                await asyncio.sleep(retrying.after_failure(exc))
                continue
            if not response.is_error:
                return response
            await asyncio.sleep(retrying.after_response(response))
