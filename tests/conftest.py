"""Shared fixtures: a real ragwatch server over HTTP with LanceDB in a temporary directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import LiveServer, RedisServer, auth, create_kb, live_server, make_settings

ClientFactory = Callable[..., httpx.Client]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The test run's own redis-server on a free port (never the machine's shared one)."""
    running = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield running
    running.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, which it may stop and start again on the same port."""
    directory = tmp_path / "redis"
    directory.mkdir()
    running = RedisServer(directory).start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the session, with the embedded defaults (offline embedder and answerer)."""
    with live_server(make_settings(tmp_path_factory.mktemp("data"))) as running:
        yield running


@pytest.fixture
def client_for(server: LiveServer) -> Iterator[ClientFactory]:
    """``client_for(tenant, user, roles)``: an HTTP client carrying a valid token for that caller."""
    clients: list[httpx.Client] = []

    def make(tenant: str = "acme", user: str = "alice", roles: tuple[str, ...] = ("admin",)) -> httpx.Client:
        client = server.client(auth(tenant, user, roles))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def admin(client_for: ClientFactory) -> httpx.Client:
    return client_for("acme", "alice", ("admin",))


@pytest.fixture
def kb_id(admin: httpx.Client) -> str:
    """A fresh knowledge base of tenant ``acme``."""
    return create_kb(admin, "handbook")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path
