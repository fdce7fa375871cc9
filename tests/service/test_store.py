"""The LanceDB store on its own: id quoting for filters, refusals of malformed ids, one-version hybrid reads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from service.chunking import Block
from service.store import DocumentRecord, Store, new_id, now, sql_literal
from tests.support import CRAFTED_IDS

DIMENSIONS = 16


def blocks(*texts: str) -> list[Block]:
    return [Block(text) for text in texts]


@pytest.mark.parametrize("value", ["a", "A1", "kb_0123456789abcdef0123", "doc-1.v2", "acme", "x" * 64, "9_._-"])
def test_sql_literal_quotes_valid_ids(value: str) -> None:
    assert sql_literal(value) == f"'{value}'"


@pytest.mark.parametrize("value", CRAFTED_IDS)
def test_sql_literal_refuses_everything_outside_the_id_format(value: str) -> None:
    with pytest.raises(ValueError, match="not a valid id"):
        sql_literal(value)


def test_new_ids_fit_the_id_format() -> None:
    for prefix in ("kb", "doc"):
        assert sql_literal(new_id(prefix)).startswith(f"'{prefix}_")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store(
        str(tmp_path / "lancedb"), dimensions=DIMENSIONS, read_consistency_s=0.5, ann_index_min_rows=50_000
    ).open()
    yield opened
    await opened.close()


def record(document_id: str, text: str, chunks: int) -> DocumentRecord:
    return DocumentRecord(
        document_id=document_id,
        title="Manual",
        chunks=chunks,
        bytes=len(text),
        metadata={},
        created_at=now(),
        text=text,
    )


def vectors(count: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(count, DIMENSIONS)).astype(np.float32)
    normalized: np.ndarray = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return normalized


async def test_lookups_with_malformed_ids_find_nothing_and_raise_nothing(store: Store) -> None:
    kb = await store.create_kb("acme", "handbook", "", "hashing")
    await store.write_document("acme", kb.id, record("doc1", "hello", 1), blocks("hello harbour"), vectors(1, 0))

    for crafted in CRAFTED_IDS:
        assert await store.get_kb("acme", crafted) is None
        assert await store.get_document("acme", kb.id, crafted) is None
        assert await store.delete_document("acme", kb.id, crafted) is False

    assert await store.kb_counts("acme", kb.id) == (1, 1)


async def test_every_read_is_scoped_to_the_tenant(store: Store) -> None:
    kb = await store.create_kb("acme", "handbook", "", "hashing")
    await store.write_document("acme", kb.id, record("doc1", "hello", 1), blocks("hello harbour"), vectors(1, 0))

    assert await store.get_kb("globex", kb.id) is None
    assert await store.list_kbs("globex") == []
    assert await store.list_documents("globex", kb.id) == []
    assert await store.get_document("globex", kb.id, "doc1") is None
    assert await store.delete_document("globex", kb.id, "doc1") is False
    assert await store.kb_counts("globex", kb.id) == (0, 0)
    assert await store.hybrid_search("globex", kb.id, vectors(1, 0)[0], "harbour", 10) == ([], [])
    assert await store.kb_counts("acme", kb.id) == (1, 1)


async def test_hybrid_search_reads_vector_and_text_hits_from_one_version_while_a_document_is_replaced(
    store: Store,
) -> None:
    """Old (3 chunks) and new (5 chunks) versions alternate; every read sees exactly one of them, in full."""
    kb = await store.create_kb("acme", "manual", "", "hashing")
    versions = {
        "amber": [f"amber chunk {i} about harbour cranes" for i in range(3)],
        "cobalt": [f"cobalt chunk {i} about harbour cranes" for i in range(5)],
    }
    embedded = {name: vectors(len(texts), seed) for seed, (name, texts) in enumerate(versions.items())}

    async def write(name: str) -> None:
        texts = versions[name]
        await store.write_document("acme", kb.id, record("manual", name, len(texts)), blocks(*texts), embedded[name])

    await write("amber")
    done = asyncio.Event()
    seen: list[tuple[frozenset[str], frozenset[str]]] = []

    async def writer() -> None:
        for round_ in range(30):
            await write("cobalt" if round_ % 2 == 0 else "amber")
        done.set()

    async def reader() -> None:
        query = vectors(1, 99)[0]
        while not done.is_set():
            vector_hits, text_hits = await store.hybrid_search("acme", kb.id, query, "harbour cranes", 20)
            seen.append((frozenset(h.text for h in vector_hits), frozenset(h.text for h in text_hits)))

    await asyncio.gather(writer(), *(reader() for _ in range(4)))

    complete = {frozenset(texts) for texts in versions.values()}
    assert len(seen) > 30
    for vector_texts, text_texts in seen:
        assert vector_texts in complete, sorted(vector_texts)
        assert text_texts == vector_texts, (sorted(vector_texts), sorted(text_texts))
    assert {vector_texts for vector_texts, _ in seen} == complete, "the reads never saw both versions"


async def test_counts_follow_writes_replacements_and_deletions(store: Store) -> None:
    kb = await store.create_kb("acme", "handbook", "", "hashing")

    await store.write_document("acme", kb.id, record("a", "x", 3), blocks("a0", "a1", "a2"), vectors(3, 1))
    await store.write_document("acme", kb.id, record("b", "y", 2), blocks("b0", "b1"), vectors(2, 2))
    assert await store.kb_counts("acme", kb.id) == (2, 5)

    replaced = await store.write_document("acme", kb.id, record("a", "z", 1), blocks("a0 new"), vectors(1, 3))
    assert replaced is True
    assert await store.kb_counts("acme", kb.id) == (2, 3)

    assert await store.delete_document("acme", kb.id, "b") is True
    assert await store.kb_counts("acme", kb.id) == (1, 1)

    await store.delete_kb("acme", kb.id)
    assert await store.kb_counts("acme", kb.id) == (0, 0)
