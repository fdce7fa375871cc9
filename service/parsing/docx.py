"""DOCX with python-docx (MIT): paragraphs and tables in document order, headings as the section path.

Runs in a parser process. The archive is checked before it is opened: a DOCX is a zip, and a zip can claim to
expand to far more than it holds (a decompression bomb), so the sizes its directory declares are bounded
first. (zipfile stops reading a member at its declared size, so the declared sizes are limits it keeps.)
"""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

import docx
from docx.oxml.ns import qn
from docx.table import Table
from docx.text.paragraph import Paragraph
from lxml.etree import XMLSyntaxError

from service.chunking import Block
from service.parsing.model import Budget, Parsed, ParseLimits, Refused

__all__ = ["check_archive", "parse_docx"]

MAX_EXPANDED_BYTES = 200 * 2**20
"""What all of an archive's members may expand to together."""
MAX_RATIO = 100
"""How much one member of over a megabyte may expand (real documents: about 30 to 1)."""
MAX_MEMBERS = 5_000
_HEADING_STYLE = re.compile(r"^heading\s*([1-9])$", re.IGNORECASE)


def check_archive(content: bytes) -> None:
    """Refuse a zip that is damaged, encrypted, or would expand past the limits, before anything is inflated."""
    try:
        members = zipfile.ZipFile(io.BytesIO(content)).infolist()
    except zipfile.BadZipFile:
        raise Refused("unreadable", "The DOCX is not a readable zip archive.") from None
    if len(members) > MAX_MEMBERS:
        raise Refused("too_large", f"The DOCX archive holds more than {MAX_MEMBERS:,} files.")
    expanded = 0
    for member in members:
        if member.flag_bits & 0x1:
            raise Refused("encrypted", "The DOCX is encrypted; upload it without a password.")
        expanded += member.file_size
        if member.file_size > 2**20 and member.file_size > MAX_RATIO * max(member.compress_size, 1):
            raise Refused("too_large", f"The DOCX's {member.filename} expands {MAX_RATIO}-fold or more (a zip bomb).")
    if expanded > MAX_EXPANDED_BYTES:
        raise Refused("too_large", f"The DOCX expands to more than {MAX_EXPANDED_BYTES // 2**20} MB.")


def parse_docx(content: bytes, limits: ParseLimits) -> Parsed:
    check_archive(content)
    try:
        document = docx.Document(io.BytesIO(content))
        return Parsed(blocks=tuple(_blocks(document, Budget(limits))))
    except (zipfile.BadZipFile, KeyError, ValueError, XMLSyntaxError) as exc:
        raise Refused("unreadable", f"The DOCX is damaged ({type(exc).__name__}).") from None


def _blocks(document: Any, budget: Budget) -> list[Block]:
    levels = _heading_levels(document)
    path: list[tuple[int, str]] = []
    blocks: list[Block] = []
    for item in document.iter_inner_content():
        section = " > ".join(name for _, name in path) or None
        if isinstance(item, Paragraph):
            text = item.text.strip()
            if not text:
                continue
            level = levels.get(item._p.style) if item._p.style else None
            level = level if level is not None else _outline_level(item._p)
            if level is not None:
                path = [(depth, name) for depth, name in path if depth < level] + [(level, text)]
            blocks.append(Block(budget.spend(text), section=" > ".join(name for _, name in path) or None))
        elif isinstance(item, Table):
            text = "\n".join(" | ".join(row) for row in _rows(item)).strip()
            if text:
                blocks.append(Block(budget.spend(text), section=section))
    return blocks


def _heading_levels(document: Any) -> dict[str, int]:
    """Style id → heading level (``Title`` 0, ``Heading n`` n, or the style's outline level), following each
    style's base styles; computed once, since python-docx's ``Paragraph.style`` searches every style per call."""
    levels: dict[str, int] = {}
    for style in document.styles:
        current, level = style, None
        while current is not None and level is None:
            name = (current.name or "").strip()
            heading = _HEADING_STYLE.match(name)
            level = (
                0 if name.lower() == "title" else int(heading.group(1)) if heading else _outline_level(current.element)
            )
            current = getattr(current, "base_style", None)
        if level is not None:
            levels[style.style_id] = level
    return levels


def _outline_level(element: Any) -> int | None:
    """``w:pPr/w:outlineLvl`` (0-based; 9 is body text) as a 1-based heading level."""
    found = element.find(f"{qn('w:pPr')}/{qn('w:outlineLvl')}")
    if found is None:
        return None
    value = int(found.get(qn("w:val"), "9"))
    return value + 1 if value < 9 else None


def _rows(table: Table) -> list[list[str]]:
    """Each row's cells, a merged cell once, nested tables inline."""
    rows = []
    for row in table.rows:
        seen: set[int] = set()
        cells = []
        for cell in row.cells:
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            parts = [paragraph.text.strip() for paragraph in cell.paragraphs if paragraph.text.strip()]
            parts += [" | ".join(nested) for inner in cell.tables for nested in _rows(inner)]
            cells.append(" ".join(parts))
        rows.append(cells)
    return rows
