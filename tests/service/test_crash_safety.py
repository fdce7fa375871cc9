"""Crash safety and erasure: ``kill -9`` during index maintenance, deletes and replacements loses nothing that
was acknowledged and leaves nothing half-written; deleted data leaves the disk within the clean-up interval.

A ``ragwatch serve`` process is killed with SIGKILL, and the service started again on the same LanceDB directory
(in the test's own process, which starts faster). What is on disk is read with LanceDB itself and byte by byte.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import lancedb
import numpy as np
import pyarrow as pa
import pytest

from service.chunking import Block
from service.store import DocumentRecord, Store, now
from tests.support import (
    GENEROUS_LIMITS,
    ServingProcess,
    auth,
    counts,
    create_kb,
    documents_url,
    ingest,
    live_server,
    make_settings,
    serving_process,
    wait_until,
)

OPTIMIZING = "LanceDB maintenance: optimizing"
RUN_DONE = "LanceDB maintenance took"
RUN_FAILED = "LanceDB index maintenance failed"
INTERVAL_S = 2
CLEANUP = {**GENEROUS_LIMITS, "RAGWATCH_CLEANUP_INTERVAL_S": str(INTERVAL_S)}
"""A clean-up interval short enough for a test."""
ERASED_WITHIN_S = 2 * INTERVAL_S + 10
"""The README's promise (twice the interval), plus what the maintenance runs themselves take on a busy machine:
the 2 s pause they wait for, their own time, and the pause the duty cycle puts between them."""


def paper(number: int, paragraphs: int, edition: str = "first") -> str:
    """A document of ``paragraphs`` chunks (one paragraph of about 1,100 characters each, with the default chunk
    size), every one naming the document's number and ``edition``."""
    return "\n\n".join(
        f"Paper {number}, {edition} edition, part {part}. "
        + f"Assay {number} of the {edition} edition measured enzyme {number % 31} in tissue {part}. " * 18
        for part in range(paragraphs)
    )


def files_holding(data: Path, marker: str) -> list[str]:
    """The files of the LanceDB directory whose raw bytes hold ``marker`` (data, deletion, index, manifest...).

    Only what is stored uncompressed: a large data file may compress its strings (see :func:`versions_keeping`).
    """
    needle = marker.encode()
    holding = []
    # os.walk skips a directory the upkeep removes while it walks (rglob raises); a file may go the same way.
    for folder, _, names in os.walk(data / "lancedb"):
        for name in names:
            path = Path(folder) / name
            try:
                if needle in path.read_bytes():
                    holding.append(str(path.relative_to(data)))
            except FileNotFoundError:
                continue
    return sorted(holding)


def versions_keeping(data: Path, table: str, where: str) -> list[str]:
    """The versions of ``table`` still on disk that hold rows matching ``where``, or that keep deleted rows in their
    data files (a deletion only marks a row deleted). None of them left means no file on disk holds those rows:
    LanceDB removes a data file once no version is made of it."""
    for attempt in itertools.count(1):
        try:
            opened = lancedb.connect(str(data / "lancedb")).open_table(table)
            kept = []
            for version in opened.list_versions():
                opened.checkout(version["version"])
                deleted = version["metadata"].get("total_deletion_file_rows", "0")
                if deleted != "0":
                    kept.append(f"{table} v{version['version']}: {deleted} deleted rows")
                elif opened.count_rows(where):
                    kept.append(f"{table} v{version['version']}: {where}")
            return kept
        except (OSError, RuntimeError, ValueError):  # the service removed a version while this read it
            if attempt == 10:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


def chunks_table(data: Path) -> lancedb.table.Table:
    return lancedb.connect(str(data / "lancedb")).open_table("chunks")


def every_row_indexed(data: Path) -> bool:
    """Whether each index of the chunks table covers every row (what a maintenance run that ended leaves)."""
    table = chunks_table(data)
    stats = [table.index_stats(index.name) for index in table.list_indices()]
    return all(stat is not None and stat.num_unindexed_rows == 0 for stat in stats)


def compacted(data: Path) -> bool:
    """Whether the chunks table is one data file."""
    try:
        return bool(chunks_table(data).list_versions()[-1]["metadata"]["total_fragments"] == "1")
    except (OSError, RuntimeError, ValueError):  # a version removed while this read it
        return False


def left_on_disk(data: Path, marker: str, *selections: tuple[str, str]) -> list[str]:
    """Every trace of deleted data: files holding ``marker``, and versions keeping the rows of ``selections``
    (table, filter) or any deleted row."""
    return files_holding(data, marker) + [
        kept for table, where in selections for kept in versions_keeping(data, table, where)
    ]


def log_lines(running: ServingProcess, *phrases: str) -> list[str]:
    """The lines of the process's log naming any of ``phrases``, in order."""
    return [line for line in running.output().splitlines() if any(phrase in line for phrase in phrases)]


def wait_for_line(running: ServingProcess, phrase: str, after: int, timeout_s: float = 20) -> int:
    """Wait until the log holds more than ``after`` lines naming ``phrase`` (looking every 5 ms, so that what
    the line announces has only just begun); their number."""
    deadline = time.monotonic() + timeout_s
    while (found := len(log_lines(running, phrase))) <= after:
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line {phrase!r} number {after + 1}:\n{running.output()[-2000:]}")
        time.sleep(0.005)
    return found


@contextmanager
def uploads_until_stopped(
    running: ServingProcess, kb_id: str, make: Callable[[int], tuple[str, str]], workers: int
) -> Iterator[tuple[dict[str, str], threading.Event]]:
    """``workers`` threads uploading ``make(n)`` (id, text) for n = 0, 1, ... until the event is set or the
    server dies; yields (what was acknowledged: id -> text, the event)."""
    acknowledged: dict[str, str] = {}
    lock = threading.Lock()
    stop = threading.Event()
    numbers = itertools.count()

    def upload() -> None:
        with running.client(auth()) as client:
            while not stop.is_set():
                with lock:
                    document_id, text = make(next(numbers))
                body = {"title": document_id, "text": text, "id": document_id}
                try:
                    response = client.post(documents_url(kb_id), json=body)
                except httpx.TransportError:
                    return  # the server died with this upload in flight: not acknowledged
                if response.status_code == 201:
                    with lock:
                        acknowledged[document_id] = text

    threads = [threading.Thread(target=upload) for _ in range(workers)]
    for thread in threads:
        thread.start()
    try:
        yield acknowledged, stop
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)


def assert_whole_and_unique(client: httpx.Client, kb_id: str, expected: dict[str, str]) -> list[dict[str, Any]]:
    """Every document of ``expected`` is there with exactly its text; none is listed twice; the knowledge base
    holds exactly the chunks its documents say they have. Returns the listing."""
    listed: list[dict[str, Any]] = client.get(documents_url(kb_id), params={"limit": 1000}).json()["data"]
    ids = [document["document_id"] for document in listed]
    documents, chunks = counts(client, kb_id)
    for document_id, text in expected.items():
        detail = client.get(f"{documents_url(kb_id)}/{document_id}")
        assert detail.status_code == 200, f"{document_id} was acknowledged and is gone"
        assert detail.json()["text"] == text, f"{document_id} is not whole"
    assert len(ids) == len(set(ids)) == documents, "a document is duplicated"
    assert chunks == sum(document["chunks"] for document in listed), "a document is half-written"
    return listed


def assert_search_and_chat_answer(client: httpx.Client, kb_id: str, question: str, expected_in: str) -> None:
    found = client.post(f"/v1/knowledge-bases/{kb_id}/search", json={"query": question, "top_k": 3})
    assert found.status_code == 200, found.text
    assert any(expected_in in result["text"] for result in found.json()["results"]), found.text
    answered = client.post("/v1/chat", json={"kb_id": kb_id, "question": question})
    assert answered.status_code == 200, answered.text
    assert answered.json()["citations"], answered.text


def test_a_kill_9_during_index_maintenance_loses_no_acknowledged_document_and_the_next_run_completes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    with serving_process(data, log_file=tmp_path / "first.log", **GENEROUS_LIMITS) as running:
        with running.client(auth()) as admin:
            kb_id = create_kb(admin, "maintained")
        # A burst of uploads: hundreds of small commits, so that the run after it has fragments to compact
        # and rows to index.
        with uploads_until_stopped(running, kb_id, lambda n: (f"p{n}", paper(n, 3)), workers=8) as (burst, _):
            wait_until(lambda: len(burst) >= 300, 30, "300 uploads")
        runs = wait_for_line(running, OPTIMIZING, after=len(log_lines(running, OPTIMIZING)))  # set off by the pause
        # Kill it while it optimizes, with uploads in flight: some acknowledged during the run, some not.
        with uploads_until_stopped(running, kb_id, lambda n: (f"q{n}", paper(n, 2, "second")), workers=4) as (
            during,
            _,
        ):
            time.sleep(0.05)
            running.process.send_signal(signal.SIGKILL)
            running.process.wait(timeout=10)
        maintenance = log_lines(running, OPTIMIZING, RUN_DONE)
    assert len(log_lines(running, OPTIMIZING)) == runs
    assert OPTIMIZING in maintenance[-1], "the kill landed after the run, not during it"
    acknowledged = {**burst, **during}

    with live_server(make_settings(data)) as restarted, restarted.client(auth()) as client:
        listed = assert_whole_and_unique(client, kb_id, acknowledged)
        assert len(listed) >= len(acknowledged)  # uploads in flight at the kill may have landed too
        assert_search_and_chat_answer(client, kb_id, "Which enzyme did assay 17 measure?", "Assay 17 ")
        # The restarted service's first run picks up what the killed one left, and ends.
        wait_until(lambda: every_row_indexed(data), 20, "a maintenance run indexing every row")
        assert RUN_FAILED not in caplog.text
        assert_search_and_chat_answer(client, kb_id, "Which enzyme did assay 250 measure?", "Assay 250 ")


def test_a_kill_9_during_deletes_and_replacements_leaves_each_document_wholly_old_wholly_new_or_gone(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    count = 60
    first = {f"d{n}": paper(n, 3) for n in range(count)}
    second = {f"d{n}": paper(n, 5, "second") for n in range(count)}
    replaced: set[str] = set()
    deleted: set[str] = set()
    attempted_deletes: set[str] = set()
    lock = threading.Lock()
    with serving_process(data, log_file=tmp_path / "first.log", **GENEROUS_LIMITS) as running:
        with running.client(auth()) as admin:
            kb_id = create_kb(admin, "churn")
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(lambda d: ingest(admin, kb_id, title=d, text=first[d], id=d), first))
        stop = threading.Event()

        def churn(worker: int) -> None:
            """Replace (or, one time in three, delete) documents, each worker in its own order, until the kill."""
            order = [f"d{(worker * 11 + 7 * n) % count}" for n in range(count)]
            with running.client(auth()) as client:
                for document_id in itertools.cycle(order):
                    if stop.is_set():
                        return
                    delete = (worker + int(document_id[1:])) % 3 == 0
                    try:
                        if delete:
                            with lock:
                                attempted_deletes.add(document_id)
                            response = client.delete(f"{documents_url(kb_id)}/{document_id}")
                        else:
                            body = {"title": document_id, "text": second[document_id], "id": document_id}
                            response = client.post(documents_url(kb_id), json=body)
                    except httpx.TransportError:
                        return
                    with lock:
                        if delete and response.status_code == 204:
                            deleted.add(document_id)
                            replaced.discard(document_id)
                        elif not delete and response.status_code == 201:
                            replaced.add(document_id)
                            deleted.discard(document_id)

        threads = [threading.Thread(target=churn, args=(worker,)) for worker in range(6)]
        for thread in threads:
            thread.start()
        wait_until(lambda: len(replaced) + len(deleted) >= 40, 30, "40 acknowledged deletes and replacements")
        running.process.send_signal(signal.SIGKILL)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        with lock:
            gone, renewed, maybe_gone = set(deleted), set(replaced), set(attempted_deletes)

    assert gone, "no delete was acknowledged before the kill"
    assert renewed, "no replacement was acknowledged before the kill"
    with live_server(make_settings(data)) as restarted, restarted.client(auth()) as client:
        listed = client.get(documents_url(kb_id), params={"limit": 1000}).json()["data"]
        documents, chunks = counts(client, kb_id)
        for document_id, old in first.items():
            new = second[document_id]
            detail = client.get(f"{documents_url(kb_id)}/{document_id}")
            if detail.status_code == 404:
                assert document_id in maybe_gone, f"{document_id} was never deleted and is gone"
                continue
            text = detail.json()["text"]
            if document_id in gone:
                # Deleted, then perhaps written again by a replacement in flight at the kill.
                assert text == new, f"{document_id} was deleted and is back as it was"
            elif document_id in renewed:
                assert text == new, f"{document_id}'s acknowledged replacement is lost"
            else:
                assert text in (old, new), f"{document_id} is a mix"
            assert detail.json()["chunks"] == (5 if text == new else 3)
            # Every chunk search finds of it is of the version it holds: never an old chunk beside new ones.
            found = client.post(
                f"/v1/knowledge-bases/{kb_id}/search",
                json={"query": f"Paper {document_id[1:]} edition part assay", "top_k": 100},
            ).json()["results"]
            other_edition = "first edition" if text == new else "second edition"
            for passage in found:
                if passage["document_id"] == document_id:
                    assert other_edition not in passage["text"], f"{document_id} holds chunks of two versions"
    ids = [document["document_id"] for document in listed]
    assert len(ids) == len(set(ids)) == documents, "a document is duplicated"
    assert chunks == sum(document["chunks"] for document in listed), "a document is half-written"


def test_deleted_documents_knowledge_bases_and_replaced_versions_leave_the_disk_within_the_cleanup_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    secret, kb_secret, kb_name, old_version = "zyxsecretalpha", "zyxkbtextbravo", "zyxkbnamecharlie", "zyxdraftdelta"
    with live_server(make_settings(data, **CLEANUP)) as running, running.client(auth()) as client:
        kept = create_kb(client, "kept")
        for number in range(30):
            ingest(client, kept, title=f"Paper {number}", text=paper(number, 2), id=f"p{number}")
        ingest(client, kept, title="Secret", text=f"The launch code is {secret}.\n\n" + paper(900, 2), id="secret")
        ingest(client, kept, title="Draft", text=f"Draft {old_version}.\n\n" + paper(901, 2), id="draft")
        doomed = client.post("/v1/knowledge-bases", json={"name": kb_name, "description": "to be deleted"})
        assert doomed.status_code == 201, doomed.text
        doomed_id = doomed.json()["id"]
        ingest(client, doomed_id, title="Gone", text=f"Whole knowledge base {kb_secret}.\n\n" + paper(902, 2))
        # Maintenance compacts the uploads into one data file: each deletion below leaves a file that is mostly
        # kept and no new file to compact it with, so erasing the deleted rows takes rewriting that file.
        wait_until(lambda: compacted(data), 20, "the uploads compacted into one data file")
        the_secret = ("chunks", "document_id = 'secret'")
        the_knowledge_base = [("chunks", f"kb_id = '{doomed_id}'"), ("knowledge_bases", f"id = '{doomed_id}'")]
        the_draft = ("chunks", f"document_text LIKE '%{old_version}%' OR text LIKE '%{old_version}%'")
        for selection in (the_secret, *the_knowledge_base, the_draft):
            assert versions_keeping(data, *selection), f"{selection} should be on disk before its deletion"

        assert client.delete(f"{documents_url(kept)}/secret").status_code == 204
        assert client.delete(f"/v1/knowledge-bases/{doomed_id}").status_code == 204
        wait_until(
            lambda: (
                not (
                    left_on_disk(data, secret, the_secret)
                    + left_on_disk(data, kb_secret, *the_knowledge_base)
                    + files_holding(data, kb_name)
                )
            ),
            ERASED_WITHIN_S,
            "the deleted document and knowledge base leaving the disk",
            context=lambda: left_on_disk(data, secret, the_secret, *the_knowledge_base) + files_holding(data, kb_name),
        )
        replacement = f"Final draft.\n\n{paper(901, 2)}"
        ingest(client, kept, title="Draft", text=replacement, id="draft")
        wait_until(
            lambda: not left_on_disk(data, old_version, the_draft),
            ERASED_WITHIN_S,
            "the replaced version leaving the disk",
            context=lambda: left_on_disk(data, old_version, the_draft),
        )

        expected = {f"p{number}": paper(number, 2) for number in range(30)} | {"draft": replacement}
        assert_whole_and_unique(client, kept, expected)
        assert client.get(f"{documents_url(kept)}/secret").status_code == 404
        assert client.get(f"/v1/knowledge-bases/{doomed_id}").status_code == 404
        assert_search_and_chat_answer(client, kept, "Which enzyme did assay 12 measure?", "Assay 12 ")
        assert RUN_FAILED not in caplog.text


def test_the_chunks_of_a_knowledge_base_whose_deletion_a_crash_cut_short_are_erased_after_a_restart(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    marker = "zyxorphanedchunkdelta"
    with live_server(make_settings(data, **CLEANUP)) as running, running.client(auth()) as client:
        kept = create_kb(client, "kept")
        ingest(client, kept, title="Kept", text=paper(1, 2), id="kept")
        doomed = create_kb(client, "doomed")
        ingest(client, doomed, title="Orphan", text=f"Orphaned {marker}.\n\n" + paper(2, 2), id="orphan")
    # What a kill between the deletion's two commits leaves: the knowledge base gone, its chunks still there.
    delete_knowledge_base_row(data, doomed)
    assert versions_keeping(data, "chunks", f"kb_id = '{doomed}'")
    # Chunks another tool wrote straight into the table, under an id the service never issued, are not its own.
    copied = copy_chunks(data, kept, "tool-written")

    with live_server(make_settings(data, **CLEANUP)) as restarted, restarted.client(auth()) as client:
        assert client.get(f"/v1/knowledge-bases/{doomed}").status_code == 404
        orphans = ("chunks", f"kb_id = '{doomed}'")
        wait_until(
            lambda: not left_on_disk(data, marker, orphans),
            ERASED_WITHIN_S,
            "the orphaned chunks leaving the disk",
            context=lambda: left_on_disk(data, marker, orphans),
        )
        assert_whole_and_unique(client, kept, {"kept": paper(1, 2)})
    assert chunks_table(data).count_rows("kb_id = 'tool-written'") == copied


def copy_chunks(data: Path, kb_id: str, as_kb_id: str) -> int:
    """Copy ``kb_id``'s chunks into the chunks table under ``as_kb_id``, which no knowledge base has; how many."""
    table = chunks_table(data)
    rows = table.search().where(f"kb_id = '{kb_id}'").to_arrow()
    rows = rows.set_column(rows.schema.get_field_index("kb_id"), "kb_id", pa.array([as_kb_id] * rows.num_rows))
    ids = pa.array([f"{as_kb_id}:{chunk_id}" for chunk_id in rows["chunk_id"].to_pylist()])
    table.add(rows.set_column(rows.schema.get_field_index("chunk_id"), rows.schema.field("chunk_id"), ids))
    return int(rows.num_rows)


def delete_knowledge_base_row(data: Path, kb_id: str) -> None:
    """Delete ``kb_id``'s row of the ``knowledge_bases`` table, as the first commit of its deletion does."""
    database = lancedb.connect(str(data / "lancedb"))
    database.open_table("knowledge_bases").delete(f"id = '{kb_id}'")


async def test_erasing_deleted_rows_while_documents_are_replaced_and_deleted_never_duplicates_mixes_or_loses_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "ragwatch.store")
    store = await Store(
        str(tmp_path / "lancedb"), dimensions=16, read_consistency_s=0, ann_index_min_rows=50_000, cleanup_interval_s=1
    ).open()
    kb = await store.create_kb("acme", "churn", "", "hashing")
    latest: dict[str, int | None] = {}  # each document's last acknowledged version (None: deleted)

    async def write(document_id: str, version: int) -> None:
        chunks = [Block(f"{document_id} version {version} part {part}") for part in range(2 + version % 3)]
        text = f"{document_id} version {version}"
        document = DocumentRecord(document_id, "Doc", len(chunks), len(text), {}, now(), text)
        vectors = np.ones((len(chunks), 16), dtype=np.float32)
        await store.write_document("acme", kb.id, document, chunks, vectors)
        latest[document_id] = version

    async def churn(worker: int, until: float) -> None:
        """Replace, and one time in five delete, the documents of this worker alone (so their last state is known)."""
        mine = [f"d{n}" for n in range(worker, 30, 6)]
        for step in itertools.count(1):
            if time.monotonic() > until:
                return
            document_id = mine[step % len(mine)]
            if step % 5 == 0:
                await store.delete_document("acme", kb.id, document_id)
                latest[document_id] = None
            else:
                await write(document_id, step)

    async def maintain(until: float) -> None:
        while time.monotonic() < until:
            await store.maintain()  # erases deleted rows once a second (the interval), compacts, indexes
            await asyncio.sleep(0.05)

    try:
        await asyncio.gather(*(write(f"d{n}", 0) for n in range(30)))
        until = time.monotonic() + 8
        await asyncio.gather(*(churn(worker, until) for worker in range(6)), maintain(until))
        await store.maintain()

        erasures = [record for record in caplog.records if "erased" in record.getMessage()]
        assert len(erasures) >= 3, "the rewrites never ran beside the writes"
        live = {document_id: version for document_id, version in latest.items() if version is not None}
        for document_id, version in latest.items():
            stored = await store.get_document("acme", kb.id, document_id)
            if version is None:
                assert stored is None, f"{document_id} was deleted and is back"
            else:
                assert stored is not None, f"{document_id} is lost"
                assert stored.text == f"{document_id} version {version}", f"{document_id} lost its last version"
        documents, chunks = await store.kb_counts("acme", kb.id)
        assert documents == len(live), "a document is duplicated or lost"
        assert chunks == sum(2 + version % 3 for version in live.values()), "a document's chunks are mixed"
    finally:
        await store.close()
