"""Large knowledge bases get an ANN vector index, and search keeps finding the right chunks through it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import lancedb

from tests.support import auth, live_server, make_settings


def _vector_index_columns(data_dir: Path) -> list[list[str]]:
    async def read() -> list[list[str]]:
        db = await lancedb.connect_async(str(data_dir / "lancedb"))
        table = await db.open_table("chunks")
        return [index.columns for index in await table.list_indices()]

    return asyncio.run(read())


def test_an_ann_index_is_built_once_the_table_reaches_the_threshold_and_search_still_works(data_dir: Path) -> None:
    settings = make_settings(
        data_dir, RAGWATCH_ANN_INDEX_MIN_ROWS="300", RAGWATCH_CHUNK_SIZE="100", RAGWATCH_CHUNK_OVERLAP="0"
    )
    facts = "\n\n".join(f"Warehouse {n} stores crate model K{n} beside dock {n % 9}." for n in range(360))
    with live_server(settings) as server, server.client(auth()) as client:
        kb_id = client.post("/v1/knowledge-bases", json={"name": "inventory"}).json()["id"]
        created = client.post(f"/v1/knowledge-bases/{kb_id}/documents", json={"title": "Stock", "text": facts})
        assert created.json()["chunks"] >= 300

        deadline = time.monotonic() + 30
        while ["vector"] not in _vector_index_columns(data_dir) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ["vector"] in _vector_index_columns(data_dir)

        reply = client.post("/v1/chat", json={"kb_id": kb_id, "question": "Where is crate model K217?", "top_k": 3})
        assert "Warehouse 217 stores crate model K217" in reply.json()["citations"][0]["text"]
