"""Request hooks shared by routes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import MutableScopeHeaders
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Message, Scope

from service.errors import UnsupportedMediaType
from service.limits import Action, RateLimiter

__all__ = ["add_rate_limit_headers", "admit", "rate_limited", "require_json"]

RATE_LIMIT_HEADERS = "ragwatch.rate_limit_headers"


async def require_json(request: Request[Any, Any, Any]) -> None:
    """``before_request`` hook of JSON-body routes: any other declared content type is refused with 415.

    Runs before the body is read, so a wrongly typed body is never parsed as JSON by accident.
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType(f"Send the body as application/json, not {media_type or 'no content type'!r}.")


def rate_limited(action: Action) -> Any:
    """A route guard counting the request against the caller's limits for ``action`` (429 when one is full)."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        await admit(connection, action)

    return guard


async def admit(
    connection: ASGIConnection[Any, Any, Any, Any], action: Action, read: Sequence[str] = ()
) -> Sequence[bytes | None] | None:
    """Count the request against the caller's limits for ``action`` (429 when one is full), and read the
    ``read`` keys in the same round trip to Redis; their values, or ``None`` when Redis was not read (no
    limiter, or Redis down).

    The chat route calls this itself rather than through a guard: it knows the keys of its cache lookup only
    once its body is read, and one round trip for both is the cost of a cached answer.
    """
    limiter: RateLimiter | None = connection.app.state.limiter
    if limiter is None:
        return None
    principal = connection.user
    decision = await limiter.check(principal.tenant_id, principal.user_id, action, read)
    connection.scope[RATE_LIMIT_HEADERS] = decision.headers()  # type: ignore[literal-required]
    return decision.read


async def add_rate_limit_headers(message: Message, scope: Scope) -> None:
    """``before_send`` hook: an allowed request's response carries its ``RateLimit`` headers."""
    headers: dict[str, str] | None = scope.get(RATE_LIMIT_HEADERS)  # type: ignore[assignment]
    if headers and message["type"] == "http.response.start":
        mutable = MutableScopeHeaders.from_message(message)
        for name, value in headers.items():
            mutable[name] = value
