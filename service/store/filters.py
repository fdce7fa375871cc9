"""LanceDB filters. They are SQL text without parameter binding, so every value placed in one goes through
:func:`sql_literal`, which accepts only the strict id format of :data:`service.models.ID_PATTERN`."""

from __future__ import annotations

import re

from service.models import ID_PATTERN

__all__ = ["document_filter", "is_id", "kb_filter", "sql_literal"]

_ID = re.compile(ID_PATTERN)


def is_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


def sql_literal(value: str) -> str:
    """``value`` quoted for a LanceDB filter; refuses anything outside the id format."""
    if not is_id(value):
        raise ValueError(f"not a valid id: {value!r}")
    return f"'{value}'"


def kb_filter(tenant_id: str, kb_id: str, column: str = "kb_id") -> str:
    """Rows of one tenant's knowledge base (``column="id"`` on the knowledge-base table itself)."""
    return f"tenant_id = {sql_literal(tenant_id)} AND {column} = {sql_literal(kb_id)}"


def document_filter(tenant_id: str, kb_id: str, document_id: str) -> str:
    return f"{kb_filter(tenant_id, kb_id)} AND document_id = {sql_literal(document_id)}"
