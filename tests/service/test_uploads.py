"""Uploads of real documents: PDF, DOCX, HTML, Markdown and text in, cited by page and section; every bad file a
clear 4xx of its own kind, nothing of it stored, and the service ready throughout."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.documents import docx_bytes, encrypt_pdf, image_pdf, text_pdf, zip_bomb_docx
from tests.support import (
    PROBLEM_BASE,
    LiveServer,
    auth,
    counts,
    create_kb,
    documents_url,
    live_server,
    make_settings,
    metric_total,
)

SECURITY_PDF = text_pdf(
    [
        ["Security handbook."],
        ["Badges are issued at the front desk on your first day."],
        ["Visitors sign in at reception and wear a red lanyard."],
    ]
)
GUIDE_DOCX = docx_bytes(
    [(1, "Installation", ["Download the installer."]), (2, "Linux", ["On Linux, install the package with apt."])],
    table=[["System", "Command"], ["Debian", "apt install ragwatch"]],
)
TRAVEL_HTML = b"""<!DOCTYPE html><html><head><title>Travel</title><script>track("secret-tracker")</script></head>
<body><nav>Home | Careers | Contact</nav><main><h1>Travel policy</h1><p>Book trains two weeks ahead.</p>
<h2>Hotels</h2><p>Hotels are booked through the travel desk, up to 150 euros a night.</p></main>
<footer>Cookie settings and copyright notice</footer></body></html>"""
SETUP_MD = b"# Setup\n\nClone the repository.\n\n## Tests\n\nRun make test to check everything.\n"


def upload(client: httpx.Client, kb_id: str, filename: str, content: bytes, **fields: str) -> httpx.Response:
    return client.post(documents_url(kb_id), files={"file": (filename, content)}, data=fields)


def search(client: httpx.Client, kb_id: str, query: str, **body: Any) -> list[dict[str, Any]]:
    response = client.post(f"/v1/knowledge-bases/{kb_id}/search", json={"query": query, **body})
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


@pytest.fixture(scope="module")
def library(server: LiveServer) -> Iterator[tuple[httpx.Client, str]]:
    """A knowledge base holding one file of every supported format."""
    with server.client(auth("uploads")) as client:
        kb_id = create_kb(client, "library")
        for filename, content in (
            ("security.pdf", SECURITY_PDF),
            ("guide.docx", GUIDE_DOCX),
            ("travel.html", TRAVEL_HTML),
            ("setup.md", SETUP_MD),
            ("notes.txt", b"The office plants are watered on Mondays."),
        ):
            response = upload(client, kb_id, filename, content)
            assert response.status_code == 201, response.text
        yield client, kb_id


def test_a_pdf_answer_cites_the_page_it_comes_from(library: tuple[httpx.Client, str]) -> None:
    client, kb_id = library

    reply = client.post("/v1/chat", json={"kb_id": kb_id, "question": "Where are badges issued?"}).json()

    assert "front desk" in reply["answer"]
    cited = reply["citations"][0]
    assert (cited["title"], cited["page"]) == ("security", 2)
    assert "section" not in cited


def test_search_results_say_the_section_of_docx_html_and_markdown(library: tuple[httpx.Client, str]) -> None:
    client, kb_id = library

    found = {
        result["title"]: result.get("section")
        for query in ("install the package with apt on Linux", "hotels travel desk euros", "run make test")
        for result in search(client, kb_id, query, top_k=1)
    }

    assert found == {"guide": "Installation > Linux", "travel": "Travel policy > Hotels", "setup": "Setup > Tests"}


def test_a_docx_table_is_searchable_row_by_row(library: tuple[httpx.Client, str]) -> None:
    client, kb_id = library

    [best] = search(client, kb_id, "Debian apt install ragwatch", top_k=1)

    assert "Debian | apt install ragwatch" in best["text"]


def test_an_html_page_is_stored_without_its_scripts_navigation_and_footer(library: tuple[httpx.Client, str]) -> None:
    client, kb_id = library
    documents = client.get(documents_url(kb_id)).json()["data"]
    travel = next(document for document in documents if document["title"] == "travel")

    text = client.get(f"{documents_url(kb_id)}/{travel['document_id']}").json()["text"]

    assert "Book trains two weeks ahead." in text
    for boilerplate in ("secret-tracker", "Careers", "Cookie settings"):
        assert boilerplate not in text


def test_streamed_citations_carry_the_page_too(library: tuple[httpx.Client, str]) -> None:
    client, kb_id = library

    streamed = client.post("/v1/chat", json={"kb_id": kb_id, "question": "What do visitors wear?", "stream": True})

    assert streamed.status_code == 200
    assert '"page":3' in streamed.text


# --- bad files ---------------------------------------------------------------------------------------------------

BAD_FILES = [
    ("truncated.pdf", SECURITY_PDF[: len(SECURITY_PDF) // 2], 422, "unreadable-document"),
    ("corrupt.pdf", b"%PDF-1.7\n" + bytes(range(256)) * 16, 422, "unreadable-document"),
    ("locked.pdf", encrypt_pdf(SECURITY_PDF, "s3cret"), 422, "encrypted-document"),
    ("scan.pdf", image_pdf(3), 422, "needs-ocr"),
    ("random.pdf", bytes(range(256)) * 16, 422, "unreadable-document"),
    ("words.pdf", b"plain words named like a PDF", 422, "unreadable-document"),
    ("random.docx", bytes(range(256)) * 16, 422, "unreadable-document"),
    ("truncated.docx", GUIDE_DOCX[:2000], 422, "unreadable-document"),
    ("bomb.docx", zip_bomb_docx(), 413, "document-too-large"),
    ("photo.png", b"\x89PNG\r\n\x1a\n" + bytes(512), 415, "unsupported-media-type"),
    ("blob", bytes(range(256)) * 16, 415, "unsupported-media-type"),
]


@pytest.mark.parametrize(("filename", "content", "status", "slug"), BAD_FILES, ids=[bad[0] for bad in BAD_FILES])
def test_a_bad_file_gets_its_own_4xx_and_nothing_is_stored(
    server: LiveServer, filename: str, content: bytes, status: int, slug: str
) -> None:
    with server.client(auth("bad-files")) as client:
        kb_id = create_kb(client, "bad")

        response = upload(client, kb_id, filename, content)

        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["type"] == PROBLEM_BASE + slug
        assert counts(client, kb_id) == (0, 0)
        assert client.get("/health/ready").status_code == 200


def test_a_bad_file_replacing_a_good_one_leaves_the_good_one_whole(server: LiveServer) -> None:
    with server.client(auth("bad-files")) as client:
        kb_id = create_kb(client, "kept")
        assert upload(client, kb_id, "security.pdf", SECURITY_PDF, id="security").status_code == 201

        refused = upload(client, kb_id, "security.pdf", image_pdf(), id="security")

        assert refused.status_code == 422
        assert counts(client, kb_id) == (1, 3)


def test_refusals_and_parses_are_counted_by_format_and_outcome(server: LiveServer) -> None:
    with server.client(auth("bad-files")) as client:
        kb_id = create_kb(client, "counted")
        before = metric_total(client, "rag_ingest_parsed_total", format="pdf", outcome="needs_ocr")
        pages_before = metric_total(client, "rag_ingest_pages_total", format="pdf")

        upload(client, kb_id, "scan.pdf", image_pdf())
        upload(client, kb_id, "security.pdf", SECURITY_PDF)

        assert metric_total(client, "rag_ingest_parsed_total", format="pdf", outcome="needs_ocr") == before + 1
        assert metric_total(client, "rag_ingest_pages_total", format="pdf") == pages_before + 3
        assert metric_total(client, "rag_ingest_parse_duration_seconds_count", format="pdf") >= 2


# --- limits ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A service with small parsing limits: 5 pages, 2,000 characters, a tenth of a second per file."""
    settings = make_settings(
        tmp_path_factory.mktemp("strict"),
        RAGWATCH_PARSE_MAX_PAGES="5",
        RAGWATCH_PARSE_MAX_CHARACTERS="2000",
        RAGWATCH_PARSE_TIMEOUT_S="0.1",
    )
    with live_server(settings) as running:
        yield running


@pytest.mark.parametrize(
    ("filename", "content", "status", "slug"),
    [
        ("long.pdf", text_pdf([[f"Page {n}."] for n in range(6)]), 413, "document-too-large"),
        ("wordy.txt", b"word " * 500, 413, "document-too-large"),
        ("short.pdf", text_pdf([[f"Page {n}."] for n in range(5)]), 201, ""),
    ],
    ids=["pages", "characters", "within-limits"],
)
def test_parsing_limits_come_from_the_settings(
    strict: LiveServer, filename: str, content: bytes, status: int, slug: str
) -> None:
    with strict.client(auth()) as client:
        kb_id = create_kb(client, "strict")
        response = upload(client, kb_id, filename, content)

    assert response.status_code == status, response.text
    if slug:
        assert response.json()["type"] == PROBLEM_BASE + slug


def test_a_file_that_takes_too_long_to_parse_is_stopped_and_the_next_one_is_parsed(
    tmp_path: Path,
) -> None:
    slow = text_pdf(
        [[f"Line {line} of page {page} has words to extract." for line in range(60)] for page in range(400)]
    )
    settings = make_settings(tmp_path, RAGWATCH_PARSE_TIMEOUT_S="0.2", RAGWATCH_PARSE_WORKERS="1")
    with live_server(settings) as running, running.client(auth()) as client:
        kb_id = create_kb(client, "slow")

        stopped = upload(client, kb_id, "slow.pdf", slow)
        after = upload(client, kb_id, "security.pdf", SECURITY_PDF)

        assert stopped.status_code == 422, stopped.text
        assert stopped.json()["type"] == PROBLEM_BASE + "parse-timeout"
        assert after.status_code == 201, after.text
        assert client.get("/health/ready").status_code == 200


def test_other_requests_are_answered_while_a_file_is_being_parsed(tmp_path: Path) -> None:
    """Parsing runs in a parser process: the event loop keeps answering (here the liveness probe) meanwhile."""
    slow = text_pdf(
        [[f"Line {line} of page {page} has words to extract." for line in range(60)] for page in range(400)]
    )
    with live_server(make_settings(tmp_path, RAGWATCH_PARSE_TIMEOUT_S="120")) as running:
        with running.client(auth()) as client:
            kb_id = create_kb(client, "slow")
        finished = threading.Event()

        def send() -> None:
            with running.client(auth()) as uploader:
                upload(uploader, kb_id, "slow.pdf", slow)
            finished.set()

        sender = threading.Thread(target=send)
        sender.start()
        probes: list[float] = []
        with running.client(auth()) as prober:
            while not finished.is_set():
                started = time.perf_counter()
                assert prober.get("/health/live").status_code == 200
                probes.append(time.perf_counter() - started)
                time.sleep(0.05)
        sender.join()

    assert len(probes) >= 5, "the upload ended before the probes could overlap it"
    assert max(probes) < 0.5, probes
