"""Uploaded files: the format detected, the file parsed (text in this process, the rest in parser processes),
every refusal a clear 4xx of its own kind, and each parse counted and timed by format and outcome."""

from __future__ import annotations

import time
from pathlib import PurePath

from service.config import ParseSettings
from service.documents.submissions import FileSubmission, NewDocument, form_fields
from service.errors import (
    BadRequest,
    DocumentTooLarge,
    EncryptedDocument,
    NeedsOcr,
    ParseTimeout,
    RagwatchError,
    UnreadableDocument,
    UnsupportedMediaType,
)
from service.parsing.formats import detect_format
from service.parsing.model import Format, Parsed, ParseLimits, Refusal, Refused
from service.parsing.pool import ParserPool
from service.parsing.text import parse_markdown, parse_text
from telemetry import Telemetry, describe_stage

__all__ = ["FORMATS", "Uploads"]

FORMATS: tuple[Format, ...] = ("pdf", "docx", "html", "markdown", "text")
_PROBLEMS: dict[Refusal, type[RagwatchError]] = {
    "unsupported": UnsupportedMediaType,
    "invalid": BadRequest,
    "unreadable": UnreadableDocument,
    "encrypted": EncryptedDocument,
    "needs_ocr": NeedsOcr,
    "too_large": DocumentTooLarge,
    "timeout": ParseTimeout,
}


class Uploads:
    def __init__(self, settings: ParseSettings, telemetry: Telemetry) -> None:
        self._limits = ParseLimits(max_pages=settings.max_pages, max_characters=settings.max_characters)
        self._pool = ParserPool(settings.workers, settings.timeout_s, settings.max_memory_mb * 2**20)
        self._instruments = telemetry.instruments
        for format_ in FORMATS:  # every format's series from the first scrape
            self._instruments.parsed_documents.add(0, {"format": format_, "outcome": "ok"})
        self._instruments.parsed_pages.add(0, {"format": "pdf"})

    async def document(self, upload: FileSubmission) -> NewDocument:
        """The uploaded file as a document, or the 4xx problem that says why it cannot be one."""
        started = time.perf_counter()
        format_: Format | None = None
        try:
            format_, text = detect_format(upload.filename, upload.content)
            parsed = await self._parse(format_, upload.content, text)
        except Refused as refused:
            self._count(format_, refused.reason, started)
            raise _PROBLEMS[refused.reason](refused.detail) from None
        self._count(format_, "ok", started)
        if parsed.pages:
            self._instruments.parsed_pages.add(parsed.pages, {"format": format_})
            describe_stage(**{"rag.document.pages": parsed.pages})
        title, metadata, document_id = form_fields(upload)
        return NewDocument(
            title=title or PurePath(upload.filename or "upload").stem,
            text="\n\n".join(block.text for block in parsed.blocks),
            metadata=metadata,
            document_id=document_id,
            blocks=parsed.blocks,
        )

    async def _parse(self, format_: Format, content: bytes, text: str | None) -> Parsed:
        """Text and Markdown here (linear, nothing to guard against); the others in a parser process."""
        if format_ == "markdown" and text is not None:
            return parse_markdown(text, self._limits)
        if format_ == "text" and text is not None:
            return parse_text(text, self._limits)
        return await self._pool.parse(format_, content, self._limits)

    def _count(self, format_: Format | None, outcome: str, started: float) -> None:
        label = format_ or "unknown"
        describe_stage(**{"rag.document.format": label, "rag.parse.outcome": outcome})
        self._instruments.parsed_documents.add(1, {"format": label, "outcome": outcome})
        self._instruments.parse_duration.record(time.perf_counter() - started, {"format": label})

    async def aclose(self) -> None:
        await self._pool.aclose()
