"""Telling formats apart by content first and name second, and refusing what cannot be ingested."""

from __future__ import annotations

import io
import zipfile

import pytest

from service.parsing.formats import decode_text, detect_format
from service.parsing.model import Refused
from tests.documents import docx_bytes, text_pdf

PDF = text_pdf([["Hello."]])
DOCX = docx_bytes([(1, "Heading", ["Body."])])


def zipped(*names: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name in names:
            archive.writestr(name, "x")
    return out.getvalue()


@pytest.mark.parametrize(
    ("filename", "content", "expected"),
    [
        ("report.pdf", PDF, "pdf"),
        ("report.bin", PDF, "pdf"),  # the content decides
        ("scan", b"garbage before\n" + PDF, "pdf"),  # a little junk before the header is allowed
        ("guide.docx", DOCX, "docx"),
        ("guide.zip", DOCX, "docx"),
        ("page.html", b"just words", "html"),  # a text format by its name
        ("page.txt", b"<!DOCTYPE html><html><body>Hi</body></html>", "html"),
        ("notes", b"<html><p>fragment</p></html>", "html"),
        ("readme.md", b"# Title\n\nBody", "markdown"),
        ("README.MARKDOWN", b"# Title", "markdown"),
        ("notes.txt", "Café déjà vu".encode(), "text"),
        ("no-extension", b"plain words", "text"),
        ("data.csv", b"a,b\n1,2\n", "text"),
        ("utf16.txt", "\ufeffhello".encode("utf-16"), "text"),
    ],
)
def test_the_format_comes_from_the_content_and_the_name_only_tells_text_formats_apart(
    filename: str, content: bytes, expected: str
) -> None:
    assert detect_format(filename, content).format == expected


@pytest.mark.parametrize(
    ("filename", "content", "reason"),
    [
        ("image.png", b"\x89PNG\r\n\x1a\n" + bytes(64), "unsupported"),
        ("photo.pdf", b"\xff\xd8\xff\xe0" + bytes(64), "unsupported"),
        ("old.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(64), "unsupported"),
        ("sheet.xlsx", zipped("[Content_Types].xml", "xl/workbook.xml"), "unsupported"),
        ("archive.zip", zipped("a.txt"), "unsupported"),
        ("archive.txt.gz", b"\x1f\x8b\x08" + bytes(64), "unsupported"),
        ("blob", bytes(range(256)) * 4, "unsupported"),
        ("random.pdf", bytes(range(256)) * 4, "unreadable"),  # random bytes under a known binary name
        ("random.docx", bytes(range(256)) * 4, "unreadable"),
        ("fake.pdf", b"%PDF but only words after it", "unreadable"),  # never ingested as text
        ("fake.docx", b"plain words", "unreadable"),
        ("broken.docx", b"PK\x03\x04 not really a zip", "unreadable"),
        ("broken.xlsx", b"PK\x03\x04 not really a zip", "unsupported"),
        ("empty.docx", zipped("[Content_Types].xml"), "unreadable"),
        ("latin1.txt", "Café".encode("latin-1"), "invalid"),
        ("empty.txt", b"", "invalid"),
        ("blank.md", b"\xef\xbb\xbf \n\t", "invalid"),
    ],
)
def test_what_cannot_be_ingested_is_refused_with_its_reason(filename: str, content: bytes, reason: str) -> None:
    with pytest.raises(Refused) as refused:
        detect_format(filename, content)

    assert refused.value.reason == reason


def test_text_is_decoded_with_its_byte_order_mark_and_binary_is_not_text() -> None:
    assert decode_text("\ufeffhé".encode()) == "hé"
    assert decode_text(b"a\x00b") is None
    assert decode_text(bytes(range(32)) * 10) is None
