"""``/health/live`` and ``/health/ready``: probes for orchestrators, open without a token."""

from __future__ import annotations

from litestar import Response, get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec

from service.models import HealthCheck, Readiness
from service.readiness import check_readiness

__all__ = ["live", "ready"]


@get("/health/live", tags=["health"], summary="The process is up (no dependency is called)")
async def live() -> HealthCheck:
    return HealthCheck(status="ok")


@get(
    "/health/ready",
    tags=["health"],
    summary="Dependencies answer; 503 with per-check detail when one fails",
    responses={
        503: ResponseSpec(data_container=Readiness, generate_examples=False, description="A dependency is failing")
    },
)
async def ready(state: State) -> Response[Readiness]:
    readiness = await check_readiness(state.pipeline, state.settings, state.shared)
    return Response(readiness, status_code=503 if readiness.status == "unavailable" else 200)
