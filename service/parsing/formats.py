"""Which format an uploaded file is in, from its content first and its name second.

The content decides whenever it can: a PDF is a PDF whatever it is called, a zip holding
``word/document.xml`` is a DOCX, text that opens like an HTML page is HTML. The name tells text formats apart
(``.md`` is Markdown, ``.html`` a fragment of HTML) and says what a file claimed to be: anything named ``.pdf``
or ``.docx`` that is no PDF or DOCX is a broken one (422, never ingested as text), bytes of no known kind an
unsupported type (415).
"""

from __future__ import annotations

import codecs
import io
import re
import zipfile
from pathlib import PurePath
from typing import NamedTuple

from service.parsing.model import Format, Refused

__all__ = ["SUFFIXES", "Detected", "decode_text", "detect_format"]

SUFFIXES: dict[str, Format] = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
}
_HTML_START = re.compile(
    r"^\s*(?:<!--.*?-->\s*)*(?:<\?xml[^>]*>\s*)?(?:<!doctype\s+html|<html[\s>]|<head[\s>]|<body[\s>]|<meta[\s>]|<title[\s>])",
    re.IGNORECASE | re.DOTALL,
)
_HTML_ANYWHERE = re.compile(r"<(?:html|head|body)[\s>]", re.IGNORECASE)
_OTHER_BINARIES = {
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1": "a legacy Office file (.doc, .xls, .ppt)",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x1f\x8b": "a gzip archive",
    b"{\\rtf": "an RTF document",
}
_OTHER_ZIPS = {"xl/workbook.xml": "an Excel workbook", "ppt/presentation.xml": "a PowerPoint deck"}


class Detected(NamedTuple):
    format: Format
    text: str | None = None
    """The decoded text of a text format (HTML, Markdown, text); ``None`` for PDF and DOCX."""


def detect_format(filename: str, content: bytes) -> Detected:
    """The format of ``content``; :class:`Refused` ``unsupported`` (415) or ``unreadable`` (422) otherwise."""
    claimed = SUFFIXES.get(PurePath(filename).suffix.lower())
    if not content.removeprefix(codecs.BOM_UTF8).strip():
        raise Refused("invalid", "The file is empty.")
    if b"%PDF-" in content[:1024]:  # the specification allows a little junk before the header
        return Detected("pdf")
    if content.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return Detected(_zip_format(content, claimed))
    for magic, kind in _OTHER_BINARIES.items():
        if content.startswith(magic):
            raise Refused("unsupported", f"The file is {kind}; ragwatch ingests PDF, DOCX, HTML, Markdown and text.")
    if claimed in ("pdf", "docx"):  # text or noise under a binary format's name: a broken file, not text
        raise Refused("unreadable", f"The file is named like a {claimed.upper()} but is not one.")
    text = decode_text(content)
    if text is None:
        if claimed is not None:
            raise Refused("invalid", f"The file is not valid UTF-8 text{_where_not_utf8(content)}.")
        raise Refused("unsupported", "The file is neither text nor a PDF or DOCX document.")
    if claimed == "html" or _looks_like_html(text):
        return Detected("html", text)
    return Detected("markdown" if claimed == "markdown" else "text", text)


def _zip_format(content: bytes, claimed: Format | None) -> Format:
    try:
        names = set(zipfile.ZipFile(io.BytesIO(content)).namelist())
    except zipfile.BadZipFile:
        if claimed == "docx":
            raise Refused("unreadable", "The DOCX is a damaged zip archive.") from None
        raise Refused(
            "unsupported", "The file is a zip archive that cannot be opened, and named like no DOCX."
        ) from None
    if "word/document.xml" in names:
        return "docx"
    for member, kind in _OTHER_ZIPS.items():
        if member in names:
            raise Refused("unsupported", f"The file is {kind}; ragwatch ingests PDF, DOCX, HTML, Markdown and text.")
    if claimed == "docx":
        raise Refused("unreadable", "The file is a zip archive without the document a DOCX holds.")
    raise Refused("unsupported", "The file is a zip archive; ragwatch ingests PDF, DOCX, HTML, Markdown and text.")


def _where_not_utf8(content: bytes) -> str:
    try:
        content.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f" (byte {exc.start})"
    return ""  # valid UTF-8, yet binary: control characters


def _looks_like_html(text: str) -> bool:
    probe = text[:4096]
    return bool(_HTML_START.match(probe) or (probe.lstrip().startswith("<") and _HTML_ANYWHERE.search(probe)))


def decode_text(content: bytes) -> str | None:
    """The text of UTF-8 (with or without a byte order mark) or BOM-marked UTF-16; ``None`` for binary data."""
    if content.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = content.decode("utf-16")
        except UnicodeDecodeError:
            return None
    else:
        try:
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError:
            return None
    sample = text[:8192]
    controls = sum(1 for char in sample if ord(char) < 32 and char not in "\t\n\r\f")
    return None if "\x00" in text or controls > len(sample) * 0.01 else text
