"""Real documents of every supported format, built in code for the tests (no files checked in, no reportlab).

PDFs are written by hand: a catalog, a page tree, the Helvetica font and one content stream per page, with a
cross-reference table whose offsets are exact, which pypdf reads back to the letter.
"""

from __future__ import annotations

import io
import zipfile
import zlib

import docx
from pypdf import PdfReader, PdfWriter

__all__ = ["docx_bytes", "encrypt_pdf", "image_pdf", "text_pdf", "zip_bomb_docx"]


def _escape(text: str) -> bytes:
    encoded = text.encode("cp1252", "replace")
    return encoded.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def _assemble(objects: list[bytes]) -> bytes:
    """A PDF of ``objects`` (object 1 the catalog), with an exact cross-reference table."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def _stream(data: bytes, extra: bytes = b"") -> bytes:
    packed = zlib.compress(data)
    return b"<< /Length %d%s /Filter /FlateDecode >>\nstream\n" % (len(packed), extra) + packed + b"\nendstream"


def text_pdf(pages: list[list[str]]) -> bytes:
    """A PDF with one page per item of ``pages``, each showing its lines of text."""
    kids = b" ".join(b"%d 0 R" % (4 + 2 * index) for index in range(len(pages)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(pages)),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    for index, lines in enumerate(pages):
        operators = [
            b"BT",
            b"/F1 12 Tf",
            b"16.8 TL",
            b"72 770 Td",
            *(b"(" + _escape(line) + b") Tj T*" for line in lines),
        ]
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * index)
        )
        objects.append(_stream(b"\n".join([*operators, b"ET"])))
    return _assemble(objects)


def image_pdf(pages: int = 2) -> bytes:
    """A scanned document: pages that only paint an image, with no text layer."""
    side = 32
    pixels = bytes(value for y in range(side) for x in range(side) for value in (x * 8 % 256, y * 8 % 256, 128))
    kids = b" ".join(b"%d 0 R" % (4 + 2 * index) for index in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages),
        _stream(
            pixels,
            b" /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceRGB "
            b"/BitsPerComponent 8" % (side, side),
        ),
    ]
    for index in range(pages):
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
            b"/Resources << /XObject << /Im1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * index)
        )
        objects.append(_stream(b"q 400 0 0 400 100 300 cm /Im1 Do Q"))
    return _assemble(objects)


def encrypt_pdf(pdf: bytes, password: str, algorithm: str = "AES-256") -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user_password=password, owner_password="owner-" + password, algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx_bytes(
    sections: list[tuple[int, str, list[str]]], table: list[list[str]] | None = None, title: str | None = None
) -> bytes:
    """A DOCX of ``(heading level, heading, paragraphs)`` sections, with a table after the first one."""
    document = docx.Document()
    if title:
        document.add_heading(title, level=0)
    for number, (level, heading, paragraphs) in enumerate(sections):
        document.add_heading(heading, level=level)
        for paragraph in paragraphs:
            document.add_paragraph(paragraph)
        if number == 0 and table:
            grid = document.add_table(rows=len(table), cols=len(table[0]))
            for row, values in zip(grid.rows, table, strict=True):
                for cell, value in zip(row.cells, values, strict=True):
                    cell.text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def zip_bomb_docx() -> bytes:
    """A DOCX whose document expands a thousandfold: 90 MB of spaces in under 100 KB."""
    genuine = zipfile.ZipFile(io.BytesIO(docx_bytes([(1, "Bomb", ["tick"])])))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bomb:
        for item in genuine.infolist():
            data = genuine.read(item.filename)
            if item.filename == "word/document.xml":
                data = data.replace(b"tick", b"tick" + b" " * 90_000_000)
            bomb.writestr(item.filename, data)
    return out.getvalue()
