"""Files to upload: which ones a folder holds, the stable id each gets, and reading one."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TypeAlias

__all__ = ["SUFFIXES", "FileInput", "document_id_for", "read_upload", "supported_files"]

SUFFIXES = (".pdf", ".docx", ".html", ".htm", ".xhtml", ".md", ".markdown", ".txt", ".text")
"""The names of the files the server ingests (PDF, DOCX, HTML, Markdown, text): what a folder upload sends."""

FileInput: TypeAlias = str | os.PathLike[str] | IO[bytes]
"""A file to upload: its path, or a file opened in binary mode."""


def supported_files(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Every file below ``folder`` whose name the server ingests, in sorted order (hidden ones too)."""
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    return iter(sorted(path for path in root.rglob("*") if path.is_file() and path.suffix.lower() in SUFFIXES))


def document_id_for(path: str | os.PathLike[str]) -> str:
    """A stable document id for a file, derived from its absolute path: uploading the same file again
    replaces its document instead of adding a copy. Also what ``ragwatch ingest`` uses."""
    path = Path(path)
    # Ids start with a letter or digit and hold only letters, digits, '_', '.', '-': "_index.md" is "index-…".
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).strip("-._")[:40] or "file"
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    return f"{stem}-{digest}"


def read_upload(file: FileInput, filename: str | None = None) -> tuple[str, bytes]:
    """The name and content of ``file``. The whole file is read once, so that a retry sends it again as it
    was (the server takes at most ``RAGWATCH_MAX_BODY_BYTES``, 10 MiB by default, anyway)."""
    if isinstance(file, str | os.PathLike):
        path = Path(file)
        return filename or path.name, path.read_bytes()
    name = getattr(file, "name", None)
    return filename or (Path(name).name if isinstance(name, str) else "upload"), file.read()
