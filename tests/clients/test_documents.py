"""``client.documents``: ingest text, upload a file or a whole folder, list (every page), get and delete, and
ingestion made idempotent by its key, with both clients."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pytest
from ragwatch_client import (
    DocumentCreated,
    DocumentDetail,
    DocumentSummary,
    NotFoundError,
    UnprocessableError,
    UnsupportedMediaTypeError,
    document_id_for,
)

from tests.clients.both import Api, collect, resolve
from tests.documents import docx_bytes, image_pdf, text_pdf

VACATION = "# Vacation\n\nEvery employee gets twenty-five days of paid vacation per year.\n"


@pytest.fixture
async def empty_kb(api: Api) -> str:
    return (await resolve(api.knowledge_bases.create("documents"))).id


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A Markdown file, a nested text file, an HTML page, a PDF and a DOCX, and two files of other kinds that
    a folder upload leaves out by their names."""
    root = tmp_path / "handbook"
    (root / "nested").mkdir(parents=True)
    (root / "vacation.md").write_text(VACATION)
    (root / "nested" / "parking.txt").write_text("Visitors park in the north garage.\n")
    (root / "security.html").write_text("<html><body><h1>Badges</h1><p>Badges open the north door.</p></body></html>")
    (root / "onboarding.pdf").write_bytes(text_pdf([["Collect your laptop at IT."]]))
    (root / "laptops.docx").write_bytes(docx_bytes([(1, "Laptops", ["Laptops are replaced every three years."])]))
    (root / "budget.xlsx").write_bytes(b"PK\x03\x04 a spreadsheet")
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return root


async def test_create_get_and_delete_a_text_document(api: Api, empty_kb: str) -> None:
    created = await resolve(
        api.documents.create(empty_kb, "Vacation", VACATION, metadata={"owner": "hr", "year": 2026}, id="vacation")
    )

    document = await resolve(api.documents.get(empty_kb, "vacation"))
    await resolve(api.documents.delete(empty_kb, "vacation"))

    assert created == DocumentCreated(document_id="vacation", chunks=1, replaced=False)
    assert isinstance(document, DocumentDetail)
    assert (document.title, document.text, document.chunks) == ("Vacation", VACATION, 1)
    assert document.metadata == {"owner": "hr", "year": 2026}
    assert document.bytes == len(VACATION.encode())
    with pytest.raises(NotFoundError):
        await resolve(api.documents.get(empty_kb, "vacation"))


async def test_creating_an_existing_id_replaces_it(api: Api, empty_kb: str) -> None:
    await resolve(api.documents.create(empty_kb, "Vacation", VACATION, id="vacation"))

    replaced = await resolve(api.documents.create(empty_kb, "Vacation", "Thirty days now.", id="vacation"))

    assert replaced.replaced
    assert (await resolve(api.documents.get(empty_kb, "vacation"))).text == "Thirty days now."


async def test_upload_a_path_with_title_metadata_and_id(api: Api, empty_kb: str, tmp_path: Path) -> None:
    path = tmp_path / "vacation.md"
    path.write_text(VACATION)

    created = await resolve(
        api.documents.upload(empty_kb, path, title="Vacation policy", metadata={"source": "wiki"}, id="vac")
    )

    document = await resolve(api.documents.get(empty_kb, "vac"))
    assert created.document_id == "vac"
    assert (document.title, document.metadata) == ("Vacation policy", {"source": "wiki"})
    assert "twenty-five days" in document.text


async def test_upload_a_file_object_named_by_filename_and_titled_by_its_stem(api: Api, empty_kb: str) -> None:
    created = await resolve(
        api.documents.upload(empty_kb, io.BytesIO(text_pdf([["Badges open the north door."]])), filename="security.pdf")
    )

    document = await resolve(api.documents.get(empty_kb, created.document_id))
    assert document.title == "security"
    assert "north door" in document.text


async def test_upload_of_an_unsupported_file_raises_415(api: Api, empty_kb: str, tmp_path: Path) -> None:
    path = tmp_path / "logo.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n")

    with pytest.raises(UnsupportedMediaTypeError) as raised:
        await resolve(api.documents.upload(empty_kb, path))

    assert raised.value.status == 415
    assert raised.value.slug == "unsupported-media-type"
    assert "PNG" in raised.value.detail


async def test_upload_folder_sends_every_supported_file_and_reports_each(api: Api, empty_kb: str, folder: Path) -> None:
    (folder / "scan.pdf").write_bytes(image_pdf())

    results = await resolve(api.documents.upload_folder(empty_kb, folder))

    by_name = {result.path.name: result for result in results}
    assert sorted(by_name) == [
        "laptops.docx",
        "onboarding.pdf",
        "parking.txt",
        "scan.pdf",
        "security.html",
        "vacation.md",
    ]
    refused = by_name.pop("scan.pdf")
    assert not refused.ok
    assert refused.document is None
    assert isinstance(refused.error, UnprocessableError)
    assert refused.error.slug == "needs-ocr"
    assert all(result.ok and result.document and result.document.chunks >= 1 for result in by_name.values())
    documents = await collect(api.documents.list(empty_kb))
    assert sorted(document.title for document in documents) == sorted(by_name)
    assert {document.document_id for document in documents} == {
        document_id_for(result.path) for result in by_name.values()
    }


async def test_uploading_a_folder_again_replaces_its_documents(api: Api, empty_kb: str, folder: Path) -> None:
    await resolve(api.documents.upload_folder(empty_kb, folder))
    (folder / "vacation.md").write_text(VACATION + "\nUnused days expire in March.\n")

    again = await resolve(api.documents.upload_folder(empty_kb, folder, concurrency=2))

    assert all(result.ok and result.document and result.document.replaced for result in again)
    detail = await resolve(api.knowledge_bases.get(empty_kb))
    assert detail.document_count == 5
    vacation = await resolve(api.documents.get(empty_kb, document_id_for(folder / "vacation.md")))
    assert "expire in March" in vacation.text


async def test_upload_folder_of_a_missing_folder_raises(api: Api, empty_kb: str, tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        await resolve(api.documents.upload_folder(empty_kb, tmp_path / "missing"))


async def test_list_follows_every_page_and_page_gives_one(api: Api, empty_kb: str) -> None:
    for number in range(5):
        await resolve(api.documents.create(empty_kb, f"Policy {number}", f"Policy number {number}.", id=f"p{number}"))

    listed = await collect(api.documents.list(empty_kb, limit=2))
    first = await resolve(api.documents.page(empty_kb, limit=3))

    assert sorted(document.document_id for document in listed) == ["p0", "p1", "p2", "p3", "p4"]
    assert all(isinstance(document, DocumentSummary) for document in listed)
    assert len(first.data) == 3
    assert first.next_cursor is not None
    rest = await resolve(api.documents.page(empty_kb, limit=3, cursor=first.next_cursor))
    assert [document.document_id for document in first.data + rest.data] == [
        document.document_id for document in listed
    ]
    assert rest.next_cursor is None


async def test_an_ingestion_repeated_with_its_idempotency_key_is_answered_from_the_first(
    api: Api, empty_kb: str
) -> None:
    key = f"ingest-{uuid.uuid4()}"

    first = await resolve(api.documents.create(empty_kb, "Vacation", VACATION, idempotency_key=key))
    again = await resolve(api.documents.create(empty_kb, "Vacation", VACATION, idempotency_key=key))

    assert again == first
    assert not again.replaced
    assert [document.document_id for document in await collect(api.documents.list(empty_kb))] == [first.document_id]


async def test_an_upload_repeated_with_its_idempotency_key_is_answered_from_the_first(
    api: Api, empty_kb: str, tmp_path: Path
) -> None:
    path = tmp_path / "vacation.md"
    path.write_text(VACATION)
    key = f"upload-{uuid.uuid4()}"

    first = await resolve(api.documents.upload(empty_kb, path, idempotency_key=key))
    again = await resolve(api.documents.upload(empty_kb, path, idempotency_key=key))

    assert again == first
    assert (await resolve(api.knowledge_bases.get(empty_kb))).document_count == 1


async def test_an_idempotency_key_reused_for_another_document_is_refused(api: Api, empty_kb: str) -> None:
    key = f"ingest-{uuid.uuid4()}"
    await resolve(api.documents.create(empty_kb, "Vacation", VACATION, idempotency_key=key))

    with pytest.raises(UnprocessableError) as raised:
        await resolve(api.documents.create(empty_kb, "Expenses", "Receipts within 14 days.", idempotency_key=key))

    assert raised.value.status == 422
    assert raised.value.slug == "idempotency-key-reused"
    assert len(await collect(api.documents.list(empty_kb))) == 1
