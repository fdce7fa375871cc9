"""PDF with pypdf (BSD): the text of each page, with its page number. Runs in a parser process."""

from __future__ import annotations

import io
import logging
from typing import Any

from pypdf import PdfReader
from pypdf.errors import DependencyError, EmptyFileError, FileNotDecryptedError, PyPdfError

from service.chunking import Block
from service.parsing.model import Budget, Parsed, ParseLimits, Refused

__all__ = ["parse_pdf"]

logging.getLogger("pypdf").setLevel(logging.ERROR)  # it logs every problem it recovers from as a warning
# What pypdf lets escape from a damaged file besides its own errors (seen fuzzing 3,000 damaged PDFs).
_DAMAGE = (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, NotImplementedError, RecursionError)


def parse_pdf(content: bytes, limits: ParseLimits) -> Parsed:
    budget = Budget(limits)
    try:
        reader = PdfReader(io.BytesIO(content))  # tolerant: junk before the header, a broken cross-reference table
        if reader.is_encrypted and reader.decrypt("") == 0:
            raise Refused("encrypted", "The PDF is protected by a password; upload it without one.")
        pages = len(reader.pages)
        if pages > limits.max_pages:
            raise Refused("too_large", f"The PDF has {pages:,} pages; at most {limits.max_pages:,} are ingested.")
        blocks: list[Block] = []
        image_pages = 0
        for number, page in enumerate(reader.pages, start=1):
            text = page.extract_text().strip()
            if text:
                blocks.append(Block(budget.spend(text), page=number))
            elif _has_image(page):
                image_pages += 1
    except (FileNotDecryptedError, DependencyError):
        raise Refused(
            "encrypted", "The PDF is encrypted in a way that cannot be opened without its password."
        ) from None
    except EmptyFileError:
        raise Refused("invalid", "The file is empty.") from None
    except _DAMAGE as exc:
        raise Refused("unreadable", f"The PDF is damaged or truncated ({type(exc).__name__}).") from None
    if not blocks:
        if image_pages:
            raise Refused(
                "needs_ocr",
                f"The PDF has no text layer ({image_pages} of {pages} pages are images): it needs OCR, which "
                "ragwatch does not do. Upload a PDF with text.",
            )
        raise Refused("unreadable", "The PDF holds no text.")
    return Parsed(blocks=tuple(blocks), pages=pages)


def _has_image(page: Any) -> bool:
    """Whether a page paints an image (directly or inside a form), without decoding it."""
    resources = page.get("/Resources")
    return _paints_image(resources.get_object() if resources is not None else {})


def _paints_image(resources: Any, depth: int = 0) -> bool:
    objects = resources.get("/XObject")
    if objects is None or depth > 8:
        return False
    for reference in objects.get_object().values():
        item = reference.get_object()
        if item.get("/Subtype") == "/Image":
            return True
        if item.get("/Subtype") == "/Form" and _paints_image(item.get("/Resources", {}), depth + 1):
            return True
    return False
