"""Readiness checks behind ``/health/ready``."""

from __future__ import annotations

import asyncio

from service.config import Settings
from service.models import HealthCheck, Readiness
from service.rag import RagPipeline
from service.shared_state import SharedState

__all__ = ["check_readiness", "monitor_readiness"]

_CHECK_TIMEOUT_S = 2.0
MONITOR_INTERVAL_S = 15.0


async def check_readiness(pipeline: RagPipeline, settings: Settings, shared: SharedState) -> Readiness:
    """``unavailable`` (503) when LanceDB or the provider configuration fails; ``degraded`` (still 200) when
    only Redis does, because requests still answer without the cache (and per the rate limiter's failure mode)."""
    checks = {
        "lancedb": await _check_lancedb(pipeline),
        "llm": _check_llm_config(settings),
        "redis": await _check_redis(shared),
    }
    dependencies = pipeline.telemetry.instruments.dependencies
    dependencies.set("lancedb", checks["lancedb"].status == "ok")
    dependencies.set("llm", checks["llm"].status == "ok")
    if checks["lancedb"].status != "ok" or checks["llm"].status != "ok":
        return Readiness(status="unavailable", checks=checks)
    return Readiness(status="ok" if checks["redis"].status == "ok" else "degraded", checks=checks)


async def monitor_readiness(pipeline: RagPipeline, settings: Settings, shared: SharedState) -> None:
    """Run the checks every 15 s, so ``rag_dependency_up`` stays current when nothing probes ``/health/ready``.

    The checks time out with ``asyncio.timeout``, not ``asyncio.wait_for``: on Python 3.11, ``wait_for``
    swallows a cancellation that arrives as its awaitable finishes, and this loop, cancelled at shutdown,
    would then run on and keep the app from stopping.
    """
    while True:
        await check_readiness(pipeline, settings, shared)
        await asyncio.sleep(MONITOR_INTERVAL_S)


async def _check_redis(shared: SharedState) -> HealthCheck:
    if shared.redis is None:
        return HealthCheck(status="ok", detail="in-process (memory://)")
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT_S):
            await shared.ping()
    except Exception as exc:  # any failure to answer PING: degraded, with the reason
        return HealthCheck(status="degraded", detail=f"Redis does not answer: {type(exc).__name__}")
    return HealthCheck(status="ok")


async def _check_lancedb(pipeline: RagPipeline) -> HealthCheck:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT_S):
            await pipeline.store.ping()
    except TimeoutError:
        return HealthCheck(status="failing", detail=f"LanceDB did not answer within {_CHECK_TIMEOUT_S:g}s")
    except Exception as exc:  # any failure to read means not ready; the detail says which
        return HealthCheck(status="failing", detail=f"LanceDB cannot be read: {type(exc).__name__}")
    return HealthCheck(status="ok")


def _check_llm_config(settings: Settings) -> HealthCheck:
    """The provider's configuration only: probing it would spend money on every probe."""
    providers = settings.providers
    if "openai" not in (providers.llm, providers.embedder):
        return HealthCheck(status="ok", detail="offline embedder and extractive answerer")
    if settings.openai.api_key is None and settings.openai.base_url is None:
        return HealthCheck(status="failing", detail="OPENAI_API_KEY or OPENAI_BASE_URL is not set")
    return HealthCheck(status="ok", detail=f"openai-compatible: {providers.llm_model}")
