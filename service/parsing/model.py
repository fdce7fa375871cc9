"""What parsing produces and what it refuses, shared by the service and its parser processes (picklable)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from service.chunking import Block

__all__ = ["Budget", "Format", "ParseLimits", "Parsed", "Refusal", "Refused"]

Format = Literal["pdf", "docx", "html", "markdown", "text"]
Refusal = Literal["unsupported", "invalid", "unreadable", "encrypted", "needs_ocr", "too_large", "timeout"]
"""Why a file was refused; each becomes its own problem type (see :mod:`service.documents.uploads`):
``unsupported`` 415, ``invalid`` 400 (empty, or text that is not UTF-8), ``too_large`` 413, the rest 422."""


class Refused(Exception):
    """The file cannot be ingested, for a reason of the file's own (never the service's)."""

    def __init__(self, reason: Refusal, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason: Refusal = reason
        self.detail = detail


@dataclass(frozen=True)
class ParseLimits:
    max_pages: int
    max_characters: int


@dataclass(frozen=True)
class Parsed:
    blocks: tuple[Block, ...]
    pages: int | None = None
    """How many pages a PDF has."""

    @property
    def characters(self) -> int:
        return sum(len(block.text) for block in self.blocks)


class Budget:
    """Counts extracted characters and stops extraction once ``limits.max_characters`` is passed."""

    def __init__(self, limits: ParseLimits) -> None:
        self._left = limits.max_characters
        self._limit = limits.max_characters

    def spend(self, text: str) -> str:
        self._left -= len(text)
        if self._left < 0:
            raise Refused("too_large", f"The document holds more than {self._limit:,} characters of text.")
        return text
