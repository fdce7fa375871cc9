"""The Litestar application: routes, auth, problem details, OpenAPI and the resources' lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from service import __version__
from service.api import DocumentController, KnowledgeBaseController, chat, live, ready
from service.api.dependencies import provide_pipeline, provide_principal
from service.api.hooks import add_rate_limit_headers
from service.api.metrics import metrics
from service.auth import Authentication, Authenticator, DevHeaderAuthenticator, JWTAuthenticator
from service.cache import Cache
from service.config import Settings, load_settings
from service.errors import problem_details_plugin, unexpected_error_handlers
from service.limits import RateLimiter, load_overrides
from service.pricing import load_prices
from service.providers import Providers, build_providers
from service.rag import RagPipeline
from service.readiness import monitor_readiness
from service.shared_state import open_shared_state
from service.store import Store
from telemetry import Telemetry, TelemetryOptions, setup_telemetry
from telemetry.http import TraceContextPassthrough, server_plugin
from telemetry.logs import configure_logging
from telemetry.middleware import RequestTelemetryMiddleware

__all__ = ["create_app", "own_process"]

logger = logging.getLogger("ragwatch")


def build_authenticator(settings: Settings) -> Authenticator:
    if settings.auth.auth_mode == "dev":
        logger.warning(
            "RAGWATCH_AUTH_MODE=dev: trusting X-Tenant-Id/X-User-Id headers without a token; never expose this"
        )
        return DevHeaderAuthenticator()
    return JWTAuthenticator(settings.auth)


def telemetry_options(settings: Settings) -> TelemetryOptions:
    return TelemetryOptions(
        service_version=__version__,
        metrics_enabled=settings.telemetry.metrics_enabled,
        capture_content=settings.telemetry.capture_content,
        tenant_label_limit=settings.telemetry.metrics_tenant_limit,
    )


def serves_metrics(settings: Settings) -> bool:
    """Whether ``/metrics`` is a route of the API (rather than disabled or on its own port)."""
    metrics = settings.telemetry
    return metrics.metrics_enabled and metrics.metrics_port in (None, settings.server.port)


def app_from_environment() -> Litestar:
    """The app as each uvicorn worker builds it when ``ragwatch serve --workers N`` runs several (metrics off)."""
    settings = load_settings(os.environ)
    observed = setup_telemetry(telemetry_options(settings))
    configure_logging(observed, settings.telemetry.log_level, settings.telemetry.log_format)
    return own_process(create_app(settings, telemetry=observed), observed)


def own_process(app: Litestar, telemetry: Telemetry) -> Litestar:
    """``app`` as the one app of a server process: its heap frozen once started, its telemetry flushed at exit."""
    app.on_startup.append(freeze_startup_heap)
    app.on_shutdown.append(telemetry.shutdown)
    return app


def freeze_startup_heap() -> None:
    """Keep the objects that live as long as the process out of every cyclic garbage collection.

    Once the app has started, its routes, OpenTelemetry providers, LanceDB tables and clients are a graph of some
    250,000 objects that each older-generation collection would walk again; measured on cached chat with telemetry
    on, that walk cost about 100 µs per request. Frozen objects are still freed by reference counting, so only
    what the process keeps anyway is exempt. A library caller's process (tests) is left as it is.
    """
    gc.collect()
    gc.freeze()


def create_app(settings: Settings, providers: Providers | None = None, telemetry: Telemetry | None = None) -> Litestar:
    """The app for ``settings``.

    ``providers`` defaults to the ones the settings choose; ``telemetry`` to one built from the ``OTEL_*``
    variables, shut down with the app (a caller that passes its own shuts it down itself).
    """
    prices = load_prices(settings.telemetry.llm_prices_file)
    overrides = load_overrides(settings.limits.rate_limit_overrides_file)
    owns_telemetry = telemetry is None
    observed = telemetry or setup_telemetry(telemetry_options(settings))
    chosen = providers or build_providers(settings, observed)

    @asynccontextmanager
    async def resources(app: Litestar) -> AsyncIterator[None]:
        logger.info(
            "telemetry %s; OTLP export: %s",
            "on" if observed.enabled else "off (OTEL_SDK_DISABLED)",
            ", ".join(sorted(observed.otlp_signals)) or "none",
        )
        store = await Store.open(
            settings.lancedb_uri,
            dimensions=chosen.embedder.dimensions,
            read_consistency_s=settings.storage.read_consistency_s,
            ann_index_min_rows=settings.storage.ann_index_min_rows,
            telemetry=observed,
        )
        shared = open_shared_state(settings, observed)
        cache = Cache(
            shared.cache, settings.cache, shared.health, observed, settle_s=settings.storage.read_consistency_s
        )
        app.state.shared = shared
        app.state.limiter = (
            RateLimiter(shared.counters, settings.limits, overrides, observed, shared.health)
            if settings.limits.rate_limit_enabled
            else None
        )
        pipeline = RagPipeline(
            store, chosen.embedder, chosen.answerer, settings.rag, cache=cache, telemetry=observed, prices=prices
        )
        app.state.pipeline = pipeline
        shared.start()
        monitor = asyncio.create_task(monitor_readiness(pipeline, settings, shared))
        try:
            yield
        finally:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
            await cache.aclose()
            await store.close()
            await chosen.aclose()
            await shared.aclose()
            if owns_telemetry:
                observed.shutdown()

    v1 = Router(
        path="/v1",
        route_handlers=[KnowledgeBaseController, DocumentController, chat],
        guards=[Authentication(build_authenticator(settings), observed)],
        dependencies={"principal": Provide(provide_principal, sync_to_thread=False)},
        security=[{"bearer": []}],
    )
    return Litestar(
        route_handlers=[v1, live, ready, *([metrics] if serves_metrics(settings) else [])],
        dependencies={"pipeline": Provide(provide_pipeline, sync_to_thread=False)},
        lifespan=[resources],
        plugins=[problem_details_plugin(), *([server_plugin(observed)] if observed.enabled else [])],
        middleware=[
            *([] if observed.enabled else [TraceContextPassthrough]),
            DefineMiddleware(RequestTelemetryMiddleware, telemetry=observed),
        ],
        before_send=[add_rate_limit_headers],
        exception_handlers=dict(unexpected_error_handlers),
        request_max_body_size=settings.server.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="ragwatch",
            version=__version__,
            path="/schema",
            render_plugins=[JsonRenderPlugin()],
            components=Components(
                security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")}
            ),
        ),
        state=State({"settings": settings, "telemetry": observed}),
        logging_config=None,  # logging is configured once per process, by `ragwatch serve`
        debug=False,
    )
