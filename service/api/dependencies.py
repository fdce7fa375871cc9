"""The caller, handed to ``/v1`` route handlers through Litestar's dependency injection.

The domain services are provided by the app from its container (see :func:`service.app.app_for`).
"""

from __future__ import annotations

from typing import Any

from litestar import Request

from service.auth import Principal

__all__ = ["provide_principal"]


def provide_principal(request: Request[Principal, Any, Any]) -> Principal:
    """The caller the authentication guard identified."""
    return request.user
