"""Test helpers: settings, tokens and a real uvicorn server in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from service.app import create_app
from service.auth import mint_token
from service.config import Settings, load_settings
from service.providers import Providers

JWT_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_settings(data_dir: Path, **env: str) -> Settings:
    """Settings as the service would read them from an environment holding ``env``."""
    base = {"RAGWATCH_DATA_DIR": str(data_dir), "RAGWATCH_JWT_SECRET": JWT_SECRET}
    return load_settings({**base, **env})


def token(tenant: str = "acme", user: str = "alice", roles: tuple[str, ...] = ("admin",), **claims: object) -> str:
    return mint_token(JWT_SECRET, tenant, user, list(roles), 3600, **claims)


def auth(tenant: str = "acme", user: str = "alice", roles: tuple[str, ...] = ("admin",)) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(tenant, user, roles)}"}


class LiveServer:
    """The real app served by uvicorn on a free port, in a thread of the test process."""

    def __init__(self, settings: Settings, providers: Providers | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings, providers), host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)

    def client(self, headers: Mapping[str, str] | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=dict(headers or {}), timeout=30)


@contextmanager
def live_server(settings: Settings, providers: Providers | None = None) -> Iterator[LiveServer]:
    server = LiveServer(settings, providers).start()
    try:
        yield server
    finally:
        server.stop()
