"""Health probes: liveness needs nothing; readiness reports each dependency and turns 503 when LanceDB breaks."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.support import LiveServer, auth, live_server, make_settings


def test_liveness_answers_200_without_a_token(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url) as anonymous:
        response = anonymous.get("/health/live")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_readiness_answers_200_with_a_detail_per_check_without_a_token(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url) as anonymous:
        response = anonymous.get("/health/ready")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"lancedb", "llm", "redis"}
    assert body["checks"]["lancedb"]["status"] == "ok"
    assert body["checks"]["llm"] == {"status": "ok", "detail": "offline embedder and extractive answerer"}
    assert body["checks"]["redis"] == {"status": "ok", "detail": "in-process (memory://)"}


def test_probes_ignore_an_invalid_token(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer not-a-token"}) as client:
        assert client.get("/health/live").status_code == 200
        assert client.get("/health/ready").status_code == 200


def wait_for_status(client: httpx.Client, path: str, status: int, timeout_s: float = 10) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get(path)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


def wait_until_unchanged(directory: Path, quiet_s: float = 1.5, timeout_s: float = 30) -> None:
    """Until no file under ``directory`` has changed for ``quiet_s``: the background maintenance that a write
    starts has finished (moved away while it runs, a table would be written again where it was)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        newest = max((path.stat().st_mtime for path in directory.rglob("*") if path.is_file()), default=0.0)
        if time.time() - newest >= quiet_s:
            return
        time.sleep(0.2)


@pytest.mark.parametrize("broken", ["lancedb", "lancedb/chunks.lance", "lancedb/knowledge_bases.lance"])
def test_readiness_turns_503_with_detail_when_lancedb_cannot_be_read(data_dir: Path, broken: str) -> None:
    """Take LanceDB (or one of its tables) away under a running server: readiness fails on lancedb only.

    Moved away rather than deleted, once the maintenance that the write started is over.
    """
    with live_server(make_settings(data_dir)) as server, server.client(auth()) as client:
        kb_id = client.post("/v1/knowledge-bases", json={"name": "kb"}).json()["id"]
        client.post(f"/v1/knowledge-bases/{kb_id}/documents", json={"title": "t", "text": "Some text."})
        assert client.get("/health/ready").status_code == 200
        wait_until_unchanged(data_dir / "lancedb")

        (data_dir / broken).rename(data_dir / "taken-away")
        response = wait_for_status(client, "/health/ready", 503)

        assert response.status_code == 503, response.text
        body = response.json()
        assert body["status"] == "unavailable"
        assert body["checks"]["lancedb"]["status"] == "failing"
        assert "LanceDB" in body["checks"]["lancedb"]["detail"]
        assert body["checks"]["llm"]["status"] == "ok"
        assert client.get("/health/live").status_code == 200


def test_readiness_recovers_when_lancedb_can_be_read_again(data_dir: Path) -> None:
    """Move the LanceDB directory away and back: 503 while it is gone, 200 once it is back."""
    with live_server(make_settings(data_dir)) as server, server.client(auth()) as client:
        assert client.get("/health/ready").status_code == 200
        (data_dir / "lancedb").rename(data_dir / "moved")

        assert wait_for_status(client, "/health/ready", 503).status_code == 503

        (data_dir / "moved").rename(data_dir / "lancedb")
        assert wait_for_status(client, "/health/ready", 200).status_code == 200
