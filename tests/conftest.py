"""Shared fixtures, and each test's layer as a marker.

Layers, by directory: ``tests/unit`` (pure logic: milliseconds, no servers; ``make test-fast``), and the
real-parts suites ``tests/service`` (the real app over HTTP, LanceDB, Redis), ``tests/clients`` (the Python
client, ``clients/python``, against the real app), ``tests/telemetry`` (what the service emits) and
``tests/stack`` (Prometheus, Alertmanager and the dashboards, for real).
The fixtures below start real servers; they import what they need when first used, so the unit layer never
loads the app.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from tests.support import LiveServer, RedisServer

ClientFactory = Callable[..., httpx.Client]
LAYERS = ("unit", "service", "clients", "telemetry", "stack")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its layer, from the directory it lives in (``pytest -m unit``)."""
    root = Path(__file__).parent
    for item in items:
        parts = item.path.relative_to(root).parts
        layer = parts[0] if len(parts) > 1 and parts[0] in LAYERS else "unit"
        item.add_marker(getattr(pytest.mark, layer))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The test run's own redis-server on a free port (never the machine's shared one)."""
    from tests.support import RedisServer

    running = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield running
    running.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, which it may stop and start again on the same port."""
    from tests.support import RedisServer

    directory = tmp_path / "redis"
    directory.mkdir()
    running = RedisServer(directory).start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the session, with the embedded defaults (offline embedder and answerer)."""
    from tests.support import live_server, make_settings

    with live_server(make_settings(tmp_path_factory.mktemp("data"))) as running:
        yield running


@pytest.fixture
def client_for(server: LiveServer) -> Iterator[ClientFactory]:
    """``client_for(tenant, user, roles)``: an HTTP client carrying a valid token for that caller."""
    from tests.support import auth

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
    from tests.support import create_kb

    return create_kb(admin, "handbook")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path
