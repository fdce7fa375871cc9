"""``/health/live`` and ``/health/ready``: probes for orchestrators, open without a token."""

from __future__ import annotations

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec

from service.models import HealthCheck, Readiness
from service.readiness import ReadinessChecks

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
async def ready(readiness: NamedDependency[ReadinessChecks]) -> Response[Readiness]:
    report = await readiness.check()
    return Response(report, status_code=503 if report.status == "unavailable" else 200)
