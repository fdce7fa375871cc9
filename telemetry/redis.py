"""Redis command spans (opentelemetry-instrumentation-redis) on one client, with our tracer provider."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.utils import suppress_instrumentation
from redis.asyncio import Redis

from telemetry.setup import Telemetry, use_stable_semantic_conventions
from telemetry.spans import record_error

__all__ = ["instrument_redis", "redis_call_in_current_span"]


def instrument_redis(client: Redis, telemetry: Telemetry) -> None:
    if telemetry.enabled:
        use_stable_semantic_conventions()
        RedisInstrumentor.instrument_client(client, tracer_provider=telemetry.tracer_provider)


@contextmanager
def redis_call_in_current_span(operation: str) -> Iterator[None]:
    """One Redis command described by the current span (the ``rate_limit`` stage, whose whole work it is)
    instead of a span of its own: on a cached chat that is one span fewer to record and export. A failure of
    the command is recorded on the current span, as the command's span would have recorded it."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({"db.system.name": "redis", "db.operation.name": operation})
    try:
        with suppress_instrumentation():
            yield
    except Exception as exc:
        record_error(span, exc)
        raise
