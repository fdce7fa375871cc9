"""Redis command spans (opentelemetry-instrumentation-redis) on one client, with our tracer provider."""

from __future__ import annotations

from opentelemetry.instrumentation.redis import RedisInstrumentor
from redis.asyncio import Redis

from telemetry.setup import Telemetry

__all__ = ["instrument_redis"]


def instrument_redis(client: Redis, telemetry: Telemetry) -> None:
    if telemetry.enabled:
        RedisInstrumentor.instrument_client(client, tracer_provider=telemetry.tracer_provider)
