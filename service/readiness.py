"""Readiness: whether LanceDB, the provider configuration and Redis let the service answer (``/health/ready``)."""

from __future__ import annotations

import asyncio

from service.config import Settings
from service.models import HealthCheck, Readiness
from service.shared.state import SharedState
from service.store import Store
from telemetry import Telemetry

__all__ = ["MONITOR_INTERVAL_S", "ReadinessChecks"]

_CHECK_TIMEOUT_S = 2.0
MONITOR_INTERVAL_S = 15.0


class ReadinessChecks:
    def __init__(self, store: Store, shared: SharedState, settings: Settings, telemetry: Telemetry) -> None:
        self._store = store
        self._shared = shared
        self._settings = settings
        self._dependencies = telemetry.instruments.dependencies

    async def check(self) -> Readiness:
        """``unavailable`` (503) when LanceDB or the provider configuration fails; ``degraded`` (still 200) when
        only Redis does, because requests still answer without the cache (and per the rate limiter's failure
        mode). Each check's outcome also sets ``rag_dependency_up``."""
        checks = {
            "lancedb": await self._check_lancedb(),
            "llm": self._check_llm_config(),
            "redis": await self._check_redis(),
        }
        self._dependencies.set("lancedb", checks["lancedb"].status == "ok")
        self._dependencies.set("llm", checks["llm"].status == "ok")
        if checks["lancedb"].status != "ok" or checks["llm"].status != "ok":
            return Readiness(status="unavailable", checks=checks)
        return Readiness(status="ok" if checks["redis"].status == "ok" else "degraded", checks=checks)

    async def monitor(self) -> None:
        """Run the checks every 15 s, so ``rag_dependency_up`` stays current when nothing probes ``/health/ready``.

        The checks time out with ``asyncio.timeout``, not ``asyncio.wait_for``: on Python 3.11, ``wait_for``
        swallows a cancellation that arrives as its awaitable finishes, and this loop, cancelled at shutdown,
        would then run on and keep the app from stopping.
        """
        while True:
            await self.check()
            await asyncio.sleep(MONITOR_INTERVAL_S)

    async def _check_redis(self) -> HealthCheck:
        if self._shared.redis is None:
            return HealthCheck(status="ok", detail="in-process (memory://)")
        try:
            async with asyncio.timeout(_CHECK_TIMEOUT_S):
                await self._shared.ping()
        except Exception as exc:  # any failure to answer PING: degraded, with the reason
            return HealthCheck(status="degraded", detail=f"Redis does not answer: {type(exc).__name__}")
        return HealthCheck(status="ok")

    async def _check_lancedb(self) -> HealthCheck:
        try:
            async with asyncio.timeout(_CHECK_TIMEOUT_S):
                await self._store.ping()
        except TimeoutError:
            return HealthCheck(status="failing", detail=f"LanceDB did not answer within {_CHECK_TIMEOUT_S:g}s")
        except Exception as exc:  # any failure to read means not ready; the detail says which
            return HealthCheck(status="failing", detail=f"LanceDB cannot be read: {type(exc).__name__}")
        return HealthCheck(status="ok")

    def _check_llm_config(self) -> HealthCheck:
        """The provider's configuration only: probing it would spend money on every probe."""
        providers, openai = self._settings.providers, self._settings.openai
        if "openai" not in (providers.llm, providers.embedder):
            return HealthCheck(status="ok", detail="offline embedder and extractive answerer")
        if openai.api_key is None and openai.base_url is None:
            return HealthCheck(status="failing", detail="OPENAI_API_KEY or OPENAI_BASE_URL is not set")
        return HealthCheck(status="ok", detail=f"openai-compatible: {providers.llm_model}")
