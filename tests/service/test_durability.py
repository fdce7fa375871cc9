"""Writes under load: concurrent uploads share commits, and an acknowledged document survives ``kill -9``."""

from __future__ import annotations

import itertools
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.support import (
    GENEROUS_LIMITS,
    LiveServer,
    auth,
    counts,
    create_kb,
    documents_url,
    live_server,
    make_settings,
    metric_total,
    serving_process,
)


def abstract(number: int) -> str:
    """An abstract-sized document: about 1,200 characters in two paragraphs."""
    sentence = f"Study {number} measured the effect of compound {number % 97} on cell line {number % 13}. "
    return sentence * 8 + "\n\n" + f"Results of study {number} were replicated twice. " * 6


def test_concurrent_uploads_share_commits_and_all_land_once(tmp_path: Path) -> None:
    with live_server(make_settings(tmp_path)) as server, server.client(auth()) as client:
        kb_id = create_kb(client, "shared commits")
        commits_before = metric_total(client, "rag_vector_db_queries_total", operation="merge_insert")

        def put(number: int) -> int:
            body = {"title": f"Study {number}", "text": abstract(number), "id": f"study-{number}"}
            return client.post(documents_url(kb_id), json=body).status_code

        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = list(pool.map(put, range(120)))
        commits = metric_total(client, "rag_vector_db_queries_total", operation="merge_insert") - commits_before
        documents = client.get(documents_url(kb_id), params={"limit": 1000}).json()["data"]

    assert statuses == [201] * 120
    assert sorted(document["document_id"] for document in documents) == sorted(f"study-{n}" for n in range(120))
    assert commits < 120, "every upload made a commit of its own"


def test_uploads_of_the_same_documents_replace_them_and_never_duplicate(server: LiveServer) -> None:
    with server.client(auth("replacing")) as client:
        kb_id = create_kb(client, "replaced")

        def put(round_and_number: tuple[int, int]) -> int:
            round_, number = round_and_number
            body = {"title": f"Doc {number}", "text": f"Version {round_} of document {number}.", "id": f"d{number}"}
            return client.post(documents_url(kb_id), json=body).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(put, itertools.product(range(3), range(10))))
        listed = client.get(documents_url(kb_id), params={"limit": 1000}).json()["data"]

        assert statuses == [201] * 30
        assert counts(client, kb_id) == (10, 10)
        assert sorted(document["document_id"] for document in listed) == sorted(f"d{n}" for n in range(10))


def test_every_acknowledged_document_survives_a_kill_9_whole_and_nothing_is_half_written(tmp_path: Path) -> None:
    data = tmp_path / "data"
    acknowledged: dict[str, str] = {}
    lock = threading.Lock()
    with serving_process(data, **GENEROUS_LIMITS) as running, running.client(auth()) as admin:
        kb_id = create_kb(admin, "durable")
        stop = threading.Event()

        def uploader(worker: int) -> None:
            with running.client(auth()) as client:
                for number in itertools.count(worker * 100_000):
                    if stop.is_set():
                        return
                    text = abstract(number)
                    try:
                        response = client.post(
                            documents_url(kb_id), json={"title": f"S{number}", "text": text, "id": f"s{number}"}
                        )
                    except httpx.TransportError:
                        return  # the server died with this upload in flight: not acknowledged
                    if response.status_code == 201:
                        with lock:
                            acknowledged[f"s{number}"] = text

        threads = [threading.Thread(target=uploader, args=(worker,)) for worker in range(4)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 80 and time.monotonic() < deadline:
            time.sleep(0.01)
        running.process.send_signal(signal.SIGKILL)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        with lock:
            survivors_expected = dict(acknowledged)

    assert len(survivors_expected) >= 80
    with serving_process(data, **GENEROUS_LIMITS) as restarted, restarted.client(auth()) as client:
        listed = client.get(documents_url(kb_id), params={"limit": 1000}).json()["data"]
        stored = {document["document_id"]: document for document in listed}
        documents, chunks = counts(client, kb_id)
        for document_id, text in survivors_expected.items():
            assert document_id in stored, f"{document_id} was acknowledged and is gone"
            detail = client.get(f"{documents_url(kb_id)}/{document_id}").json()
            assert detail["text"] == text

    assert len(stored) == len(listed) == documents  # nothing duplicated
    assert chunks == sum(document["chunks"] for document in listed)  # every document whole
