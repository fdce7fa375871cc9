"""Values handed to route handlers through Litestar's dependency injection."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import State

from service.auth import Principal
from service.rag import RagPipeline

__all__ = ["provide_pipeline", "provide_principal"]


def provide_pipeline(state: State) -> RagPipeline:
    pipeline: RagPipeline = state.pipeline
    return pipeline


def provide_principal(request: Request[Principal, Any, Any]) -> Principal:
    return request.user
