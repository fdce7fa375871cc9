"""Cursor pagination of the list routes: ``limit`` items per page, and an opaque ``next_cursor`` to go on.

Lists are ordered by creation time, then id. A cursor names the last item of a page (its ``created_at`` and
id), and the next page is what comes after it (keyset pagination): deleting items between requests never
shifts a page, and items created since come on later pages. A document replaced while a client pages moves to
the end (it is newer), so it may be listed twice. ``created_at`` is stamped before a write commits, so a write
still committing when a page passed its place is missed (the README says so). LanceDB sorts nothing for us:
each page reads the keys after its cursor and sorts them here.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import TypeVar

import msgspec

from service.errors import BadRequest
from service.models import ID_PATTERN

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "after", "decode_cursor", "encode_cursor", "page"]

T = TypeVar("T")

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$")
_ID = re.compile(ID_PATTERN)


class Position(msgspec.Struct, array_like=True, frozen=True):
    created_at: str
    id: str


def encode_cursor(created_at: str, item_id: str) -> str:
    """The cursor of the page that follows the item ``(created_at, item_id)``."""
    return base64.urlsafe_b64encode(msgspec.json.encode(Position(created_at, item_id))).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    """The position a cursor names (400 for anything this service did not hand out)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = msgspec.json.decode(raw, type=Position)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        position = None
    # Both values are placed in a LanceDB filter: only the exact formats this service writes get through.
    if position is None or not _TIMESTAMP.fullmatch(position.created_at) or not _ID.fullmatch(position.id):
        raise BadRequest("Not a cursor of this list: pass the `next_cursor` of the previous page unchanged.")
    return position


def after(cursor: str | None, id_column: str) -> str | None:
    """The filter for the items after ``cursor`` in (``created_at``, ``id_column``) order; ``None``: all."""
    if cursor is None:
        return None
    position = decode_cursor(cursor)
    stamp, item = f"'{position.created_at}'", f"'{position.id}'"
    return f"(created_at > {stamp} OR (created_at = {stamp} AND {id_column} > {item}))"


def page(items: list[T], limit: int, position: Callable[[T], tuple[str, str]]) -> tuple[list[T], str | None]:
    """The first ``limit`` of ``items`` (ordered, at most ``limit + 1`` long) and the cursor that follows
    them, or ``None`` when there are no more."""
    if len(items) <= limit:
        return items, None
    kept = items[:limit]
    return kept, encode_cursor(*position(kept[-1]))
