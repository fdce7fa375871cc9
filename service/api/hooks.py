"""Request hooks shared by routes."""

from __future__ import annotations

from typing import Any

from litestar import Request

from service.errors import UnsupportedMediaType

__all__ = ["require_json"]


async def require_json(request: Request[Any, Any, Any]) -> None:
    """``before_request`` hook of JSON-body routes: any other declared content type is refused with 415.

    Runs before the body is read, so a wrongly typed body is never parsed as JSON by accident.
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType(f"Send the body as application/json, not {media_type or 'no content type'!r}.")
