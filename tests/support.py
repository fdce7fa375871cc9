"""Test helpers: settings, tokens, a real uvicorn server in a background thread, and what tests share."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.auth import mint_token
from service.config import Settings, load_settings
from service.providers import Providers
from telemetry import Telemetry

T = TypeVar("T")
JWT_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
PROBLEM_BASE = "https://ragwatch.dev/problems/"
"""Every problem ``type`` is this followed by a slug such as ``not-found``."""
HANDBOOK = (
    "Vacation policy.\n\nEvery employee gets twenty-five days of paid vacation per year. "
    "Unused vacation days expire at the end of March of the following year.\n\n"
    "Expense policy.\n\nTravel expenses are reimbursed within fourteen days when receipts are attached."
)
CRAFTED_IDS = [
    "",
    " ",
    " leading-space",
    "kb' OR tenant_id != 'x",
    "' OR '1'='1",
    "x' --",
    "x' OR 1=1 --",
    "a'b",
    'a"b',
    "a;b",
    "x; DROP TABLE chunks",
    "%",
    "kb_%",
    "*",
    "a b",
    "a\tb",
    "a\nb",
    "a\x00b",
    "ü",
    "naïve",
    "naïve-kb",
    "🙂",
    "\\",
    "a/b",
    "(a)",
    "-leading-dash",
    "_leading_underscore",
    "_leading-underscore",
    ".leading-dot",
    "x" * 65,
    "x" * 5000,
    "y" * 5000,
]
"""Ids outside the id format: SQL fragments, LIKE wildcards, quotes, blanks, control characters, unicode,
path separators, a leading character other than a letter or digit, and lengths past 64."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


GENEROUS_LIMITS = {
    "RAGWATCH_RATE_LIMIT_PER_MINUTE": "1000000",
    "RAGWATCH_RATE_LIMIT_PER_HOUR": "1000000",
    "RAGWATCH_RATE_LIMIT_TENANT_PER_MINUTE": "1000000",
    "RAGWATCH_RATE_LIMIT_TENANT_PER_HOUR": "1000000",
}
"""Limits every test stays under: the limiter runs on every request, and its own tests set small ones."""
TEST_EMBEDDER = {"RAGWATCH_EMBEDDER": "hashing"}
"""The embedder of every test that names none: the hashing embedder, whose vectors depend on shared words only,
so what a test retrieves follows from its own text. The default (WordLlama) has tests of its own."""


def make_settings(data_dir: Path, **env: str) -> Settings:
    """Settings as the service would read them from an environment holding ``env``."""
    base = {"RAGWATCH_DATA_DIR": str(data_dir), "RAGWATCH_JWT_SECRET": JWT_SECRET, **GENEROUS_LIMITS, **TEST_EMBEDDER}
    return load_settings({**base, **env})


def token(tenant: str = "acme", user: str = "alice", roles: tuple[str, ...] = ("admin",), **claims: object) -> str:
    return mint_token(JWT_SECRET, tenant, user, list(roles), 3600, **claims)


def auth(tenant: str = "acme", user: str = "alice", roles: tuple[str, ...] = ("admin",)) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(tenant, user, roles)}"}


class LiveServer:
    """The real app served by uvicorn on a free port, in a thread of the test process."""

    def __init__(
        self, settings: Settings, providers: Providers | None = None, telemetry: Telemetry | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(settings, providers, telemetry)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
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
def live_server(
    settings: Settings, providers: Providers | None = None, telemetry: Telemetry | None = None
) -> Iterator[LiveServer]:
    """A running server; ``telemetry`` (for in-memory exporters) stays the caller's to shut down."""
    server = LiveServer(settings, providers, telemetry).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def two_replicas(
    data_dir: Path, redis_url: str, tenant: str, **env: str
) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Two servers on one LanceDB directory and one Redis (writes seen at once), and a client of ``tenant`` for
    each: what one replica does, the other must see."""
    settings = make_settings(data_dir, RAGWATCH_REDIS_URL=redis_url, RAGWATCH_READ_CONSISTENCY_S="0", **env)
    with (
        live_server(settings) as first,
        live_server(settings) as second,
        first.client(auth(tenant)) as one,
        second.client(auth(tenant)) as other,
    ):
        yield one, other


def fresh_tenant() -> str:
    """A tenant id no other test uses, so that its list of knowledge bases starts empty."""
    return f"t{uuid.uuid4().hex[:12]}"


# --- HTTP: problems, knowledge bases, documents ---------------------------------------------------------


def assert_problem(
    response: httpx.Response, status: int, slug: str, *, sent: str | None = None, detail: bool = False
) -> dict[str, Any]:
    """``response`` is an RFC 9457 problem of ``status`` and type ``slug`` with a title; returns its body.

    ``sent``: something the caller sent (a token, a key) that neither the body nor a header may repeat.
    ``detail``: the problem must also say what went wrong in a non-empty ``detail``.
    """
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM_BASE + slug
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert body["title"]
    if detail:
        assert isinstance(body["detail"], str)
        assert body["detail"]
    if sent:
        assert sent not in response.text
        assert all(sent not in value for value in response.headers.values())
    return body


def create_kb(client: httpx.Client, name: str) -> str:
    """The id of a new knowledge base called ``name``."""
    response = client.post("/v1/knowledge-bases", json={"name": name})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def documents_url(kb_id: str) -> str:
    return f"/v1/knowledge-bases/{kb_id}/documents"


def ingest(client: httpx.Client, kb_id: str, **document: object) -> dict[str, Any]:
    """Ingest ``document`` (title, text, optional id and metadata) as JSON; the 201 answer's body."""
    response = client.post(documents_url(kb_id), json=document)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def counts(client: httpx.Client, kb_id: str) -> tuple[int, int]:
    """Document and chunk count of a knowledge base, as its detail reports them."""
    response = client.get(f"/v1/knowledge-bases/{kb_id}")
    assert response.status_code == 200, response.text
    return response.json()["document_count"], response.json()["chunk_count"]


def manual(marker: str, sections: int) -> str:
    """Text whose every chunk talks about harbour cranes and names ``marker``, so one question finds them all.

    Each section is one paragraph of about 450 characters: with the default chunk size, one chunk a section.
    """
    return "\n\n".join(
        f"Section {i} of the {marker} edition. "
        + f"Harbour crane scheduling and berth allocation follow the {marker} rules for crane {i}. " * 5
        for i in range(sections)
    )


# --- the command line -----------------------------------------------------------------------------------


def clean_environment(**env: str) -> dict[str, str]:
    """The test process's environment without any ragwatch or OpenAI setting, plus ``env``."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("RAGWATCH_", "OPENAI_"))}
    return {**kept, **env}


def run_ragwatch(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``ragwatch args`` (``python -m service``) with no ragwatch/OpenAI variable of this process, only ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=clean_environment(**env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class ServingProcess:
    """A ``ragwatch serve`` subprocess (see :func:`serving_process`)."""

    process: subprocess.Popen[bytes]
    url: str
    log_file: Path
    exit_code: int | None = None
    shutdown_s: float | None = None
    """Seconds from SIGTERM to the process's exit, once :meth:`stop` has run."""

    def client(self, headers: Mapping[str, str] | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=dict(headers or {}), timeout=30)

    def output(self) -> str:
        """What the process wrote to stdout and stderr so far (its JSON log lines)."""
        return self.log_file.read_text(errors="replace")

    def wait_ready(self, path: str = "/health/ready", timeout_s: float = 60) -> None:
        """Poll ``path`` until it answers 200; fails if the process exits or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ragwatch serve exited with {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}{path}", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"ragwatch serve did not become ready:\n{self.output()}")

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM, then wait up to ``timeout_s`` for the exit (killing it past that); records ``exit_code``
        (None if it had to be killed) and ``shutdown_s``."""
        if self.process.poll() is not None:
            self.exit_code = self.process.returncode
            return
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.exit_code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.shutdown_s = time.monotonic() - started


def start_serving(data_dir: Path, *args: str, log_file: Path | None = None, **env: str) -> ServingProcess:
    """Start ``ragwatch serve args`` (``python -m service serve``) on a free port, without waiting for it.

    Its environment is this process's without any ragwatch, OpenAI or OTEL variable, plus the data directory,
    the test JWT secret, the port and ``env`` (which wins). stdout and stderr go to ``log_file`` (default
    ``data_dir / "serve.log"``): a pipe could fill and block the process.
    """
    port = free_port()
    inherited = {name: value for name, value in clean_environment().items() if not name.startswith("OTEL_")}
    environment = {
        **inherited,
        "RAGWATCH_DATA_DIR": str(data_dir),
        "RAGWATCH_JWT_SECRET": JWT_SECRET,
        "RAGWATCH_PORT": str(port),
        **TEST_EMBEDDER,
        **env,
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_file or data_dir / "serve.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", *args], env=environment, stdout=log, stderr=subprocess.STDOUT
        )
    return ServingProcess(process, f"http://127.0.0.1:{port}", log_file)


@contextmanager
def serving_process(
    data_dir: Path,
    *args: str,
    log_file: Path | None = None,
    ready_path: str = "/health/ready",
    stop_timeout_s: float = 30,
    **env: str,
) -> Iterator[ServingProcess]:
    """A ``ragwatch serve`` subprocess (see :func:`start_serving`) once ``ready_path`` answers 200; leaving the
    block stops it with SIGTERM (see :meth:`ServingProcess.stop`)."""
    running = start_serving(data_dir, *args, log_file=log_file, **env)
    try:
        running.wait_ready(ready_path)
        yield running
    finally:
        running.stop(stop_timeout_s)


@contextmanager
def serving_processes(count: int, data_dir: Path, **env: str) -> Iterator[list[ServingProcess]]:
    """``count`` ``ragwatch serve`` subprocesses sharing ``data_dir`` (logging to ``serve0.log``… in it),
    started together, once each is ready; leaving the block stops them all."""
    started: list[ServingProcess] = []
    try:
        for number in range(count):
            started.append(start_serving(data_dir, log_file=data_dir / f"serve{number}.log", **env))
        for running in started:
            running.wait_ready()
        yield started
    finally:
        for running in started:
            running.stop()


class RedisServer:
    """A real ``redis-server`` of the test run's own, on a free port, that a test may stop and start again."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._directory = directory
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self._process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self.answers():
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        return self

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None

    def command(self, *words: str) -> bytes:
        """One raw command (``FLUSHALL``, ``INFO commandstats``…), for tests that look inside."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as connection:
            connection.sendall((" ".join(words) + "\r\n").encode())
            return connection.recv(65536)


def metric_total(client: httpx.Client, sample: str, **labels: str) -> float:
    """The sum of ``sample``'s series (e.g. ``rag_cache_lookups_total``) whose labels include ``labels``, as
    ``/metrics`` reports them now."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return sum(
        found.value
        for family in text_string_to_metric_families(response.text)
        for found in family.samples
        if found.name == sample and all(found.labels.get(name) == value for name, value in labels.items())
    )


def wait_until(
    probe: Callable[[], T | None],
    timeout_s: float = 15.0,
    what: str = "the condition",
    context: Callable[[], object] | None = None,
) -> T:
    """Poll ``probe`` until it returns something truthy, and return that; fails after ``timeout_s``, showing
    ``context()`` (what the test knows about why) when given."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            known = f"; {context()}" if context is not None else ""
            raise AssertionError(f"{what} did not happen within {timeout_s}s{known}")
        time.sleep(0.1)
