"""The real Prometheus and Alertmanager (Debian's packages) run by the stack tests, and a webhook receiver.

Each server runs on a free port of 127.0.0.1 with its data in a temporary directory, and is stopped by
leaving its ``with`` block.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support import free_port

PROMETHEUS = "prometheus"
ALERTMANAGER = "prometheus-alertmanager"
"""Debian's name for the ``alertmanager`` binary."""


@dataclass
class Running:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def _serving(command: Sequence[str], url: str, log: Path, what: str) -> Iterator[Running]:
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    running = Running(url, process, log)
    try:
        deadline = time.monotonic() + 30
        while not _ready(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start:\n{running.output()}")
            time.sleep(0.1)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def prometheus(
    directory: Path, config: Mapping[str, Any], flags: Sequence[str] = ("--enable-feature=exemplar-storage",)
) -> Iterator[Prometheus]:
    """Prometheus with ``config`` (its ``rule_files`` as given) and ``flags`` (by default exemplar storage on,
    as the compose file runs it), data under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(dict(config)))
    url = f"http://127.0.0.1:{free_port()}"
    command = [
        PROMETHEUS,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address={url.removeprefix('http://')}",
        *flags,
    ]
    with _serving(command, url, directory / "prometheus.log", "prometheus") as running:
        yield Prometheus(running)


class Prometheus:
    def __init__(self, running: Running) -> None:
        self.running = running
        self.url = running.url

    def query(self, expression: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one sample) of ``expression``; fails on a rejected expression."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expression}, timeout=10)
        body = response.json()
        assert response.status_code == 200, f"{expression}: {body}"
        assert body["status"] == "success", f"{expression}: {body}"
        data = body["data"]
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def rule_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = httpx.get(f"{self.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        return groups

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = httpx.get(f"{self.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        return alerts


@contextmanager
def alertmanager(directory: Path, config: Mapping[str, Any]) -> Iterator[Running]:
    """Alertmanager with ``config``, clustering off, data under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    config_file = directory / "alertmanager.yml"
    config_file.write_text(yaml.safe_dump(dict(config)))
    url = f"http://127.0.0.1:{free_port()}"
    command = [
        ALERTMANAGER,
        f"--config.file={config_file}",
        f"--storage.path={directory / 'data'}",
        f"--web.listen-address={url.removeprefix('http://')}",
        "--cluster.listen-address=",
    ]
    with _serving(command, url, directory / "alertmanager.log", "alertmanager") as running:
        yield running


@dataclass
class Notification:
    path: str
    authorization: str | None
    body: dict[str, Any]


@dataclass
class WebhookReceiver:
    """Records every notification POSTed to it (Alertmanager's webhook payload), by path."""

    url: str = ""
    notifications: list[Notification] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> list[Notification]:
        with self._lock:
            return list(self.notifications)

    def record(self, notification: Notification) -> None:
        with self._lock:
            self.notifications.append(notification)


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            receiver.record(Notification(self.path, self.headers.get("Authorization"), body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads what was received, not an access log."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="webhook-receiver")
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
