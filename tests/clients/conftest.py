"""Fixtures of the client tests: the session's live server (``tests/conftest.py``), a client of each kind
per test for a tenant of its own, and servers with tight limits or a fake LLM for the error paths."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from ragwatch_client import AsyncClient, Client

from tests.clients.both import Api, resolve
from tests.fake_openai import FakeOpenAI, openai_env, running_fake_openai
from tests.support import HANDBOOK, LiveServer, fresh_tenant, live_server, make_settings, token

Connect = Callable[..., Api]
"""``connect(roles=("admin",), user="alice", *, url=server.url, bearer=None, max_retries=2,
max_retry_wait=60.0, transport=None)``: a client of the kind the test runs with, with the token of that
caller of the test's own tenant (or ``bearer``), closed after the test."""


class LosesAnswers(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """A transport for either client that sends every request to the server for real, then loses the first
    ``count`` answers as a connection dropped on the way back would: the server did the work, the client
    sees ``httpx.ReadError``. ``keys`` records the ``Idempotency-Key`` of each attempt (``None``: none)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.keys: list[str | None] = []
        self._sync = httpx.HTTPTransport()
        self._async = httpx.AsyncHTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._sync.handle_request(request)
        response.read()
        return self._deliver(request, response)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._async.handle_async_request(request)
        await response.aread()
        return self._deliver(request, response)

    def _deliver(self, request: httpx.Request, response: httpx.Response) -> httpx.Response:
        self.keys.append(request.headers.get("idempotency-key"))
        if self.count:
            self.count -= 1
            raise httpx.ReadError("the connection dropped before the answer arrived", request=request)
        return response

    def close(self) -> None:
        self._sync.close()

    async def aclose(self) -> None:
        await self._async.aclose()


@pytest.fixture(params=["sync", "async"])
async def connect(request: pytest.FixtureRequest, server: LiveServer) -> AsyncIterator[Connect]:
    tenant = fresh_tenant()
    made: list[Api] = []

    def make(
        roles: tuple[str, ...] = ("admin",),
        user: str = "alice",
        *,
        url: str = server.url,
        bearer: str | None = None,
        max_retries: int = 2,
        max_retry_wait: float = 60.0,
        transport: LosesAnswers | None = None,
    ) -> Api:
        bearer = token(tenant, user, roles) if bearer is None else bearer
        options = {"token": bearer, "max_retries": max_retries, "max_retry_wait": max_retry_wait}
        client: Api = (
            Client(url, transport=transport, **options)  # type: ignore[arg-type]
            if request.param == "sync"
            else AsyncClient(url, transport=transport, **options)  # type: ignore[arg-type]
        )
        made.append(client)
        return client

    yield make
    for client in made:
        if isinstance(client, Client):
            client.close()
        else:
            await client.aclose()


@pytest.fixture
def api(connect: Connect) -> Api:
    """An admin of the test's own tenant (so its lists start empty)."""
    return connect()


@pytest.fixture
async def kb_id(api: Api) -> str:
    """A knowledge base holding the handbook (vacation and expense policies)."""
    kb = await resolve(api.knowledge_bases.create("handbook"))
    await resolve(api.documents.create(kb.id, "Handbook", HANDBOOK))
    return kb.id


TIGHT = {"RAGWATCH_RATE_LIMIT_PER_MINUTE": "1", "RAGWATCH_RATE_LIMIT_PER_HOUR": "1", "RAGWATCH_MAX_BODY_BYTES": "4096"}
"""Each user may chat, search or ingest once an hour; a body stops at 4 KiB."""


@pytest.fixture(scope="module")
def tight_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with the :data:`TIGHT` limits."""
    with live_server(make_settings(tmp_path_factory.mktemp("tight"), **TIGHT)) as running:
        yield running


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeOpenAI]:
    """The fake OpenAI-compatible provider behind :func:`llm_server`; its knobs are reset after each test."""
    with running_fake_openai() as fake:
        yield fake


@pytest.fixture
def fake_llm(llm: FakeOpenAI) -> Iterator[FakeOpenAI]:
    yield llm
    llm.malformed_after_chunks = None


@pytest.fixture(scope="module")
def llm_server(llm: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server answering with the fake provider, without an answer cache (so every chat reaches it)."""
    env = openai_env(llm.base_url, RAGWATCH_LLM_TIMEOUT_S="2", RAGWATCH_CACHE_ANSWERS_ENABLED="false")
    with live_server(make_settings(tmp_path_factory.mktemp("llm"), **env)) as running:
        yield running
