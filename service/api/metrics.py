"""``GET /metrics``: the Prometheus exposition of every OpenTelemetry instrument."""

from __future__ import annotations

from litestar import Response, get
from litestar.datastructures import State

from telemetry.http import METRICS_CONTENT_TYPE, metrics_payload

__all__ = ["metrics"]


@get(
    "/metrics",
    media_type=METRICS_CONTENT_TYPE,
    tags=["operations"],
    summary="Prometheus metrics",
    include_in_schema=True,
    sync_to_thread=False,
)
def metrics(state: State) -> Response[bytes]:
    return Response(metrics_payload(state.telemetry), media_type=METRICS_CONTENT_TYPE)
