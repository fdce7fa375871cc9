"""The query parameters of every paged list route."""

from __future__ import annotations

from typing import Annotated

from litestar.params import Parameter

from service.pagination import DEFAULT_LIMIT, MAX_LIMIT

__all__ = ["Cursor", "Limit"]

Limit = Annotated[
    int, Parameter(ge=1, le=MAX_LIMIT, description=f"Items per page (1 to {MAX_LIMIT}, default {DEFAULT_LIMIT})")
]
Cursor = Annotated[
    str | None, Parameter(description="The `next_cursor` of the previous page; absent for the first page")
]
