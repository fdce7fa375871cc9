"""The Litestar application: routes, their dependencies, problem details, OpenAPI and the container's lifespan.

Routes ask for the one domain service they need by name (``knowledge_bases``, ``documents``, ``chat``,
``readiness``); each is provided from the :class:`~service.container.Container` the app was built with.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from service import __version__
from service.admission import AdmissionMiddleware
from service.api import (
    ConversationController,
    DocumentController,
    KnowledgeBaseController,
    ProbeController,
    chat,
    chat_completions,
    feedback,
    live,
    metrics,
    models,
    ready,
    reindex,
    search,
)
from service.api.dependencies import provide_principal
from service.api.hooks import add_rate_limit_headers
from service.audit import AuditTrail
from service.auth import MEMBERS_ONLY, authentication_guard
from service.config import Settings
from service.container import Container, build_container
from service.errors import problem_details_plugin, unexpected_error_handlers
from service.providers import Providers
from telemetry import Telemetry
from telemetry.http import TraceContextPassthrough, server_plugin
from telemetry.middleware import RequestTelemetryMiddleware

__all__ = ["app_for", "create_app", "serves_metrics"]

T = TypeVar("T")


def create_app(settings: Settings, providers: Providers | None = None, telemetry: Telemetry | None = None) -> Litestar:
    """The app for ``settings`` (see :func:`~service.container.build_container` for the two defaults)."""
    return app_for(build_container(settings, telemetry=telemetry, providers=providers))


def serves_metrics(settings: Settings) -> bool:
    """Whether ``/metrics`` is a route of the API (rather than disabled or on its own port)."""
    metrics_settings = settings.telemetry
    return metrics_settings.metrics_enabled and metrics_settings.metrics_port in (None, settings.server.port)


def app_for(container: Container) -> Litestar:
    """The app serving ``container``: started with the app, closed when it shuts down."""
    settings, observed = container.settings, container.telemetry

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await container.start()
        try:
            yield
        finally:
            await container.aclose()

    v1 = Router(
        path="/v1",
        route_handlers=[
            KnowledgeBaseController,
            DocumentController,
            chat,
            ConversationController,
            feedback,
            ProbeController,
            search,
            reindex,
            models,
            chat_completions,
        ],
        guards=[authentication_guard(container.authenticator, observed)],
        opt=MEMBERS_ONLY,  # admin routes say ADMINS_ONLY
        dependencies={"principal": Provide(provide_principal, sync_to_thread=False)},
        security=[{"bearer": []}],
    )
    return Litestar(
        route_handlers=[v1, live, ready, *([metrics] if serves_metrics(settings) else [])],
        dependencies={
            "knowledge_bases": _provide(container.knowledge_bases),
            "documents": _provide(container.documents),
            "chat": _provide(container.chat),
            "conversations": _provide(container.conversations),
            "feedback": _provide(container.feedback),
            "probes": _provide(container.probes),
            "search": _provide(container.search),
            "reindexing": _provide(container.reindexing),
            "completions": _provide(container.completions),
            "readiness": _provide(container.readiness),
        },
        lifespan=[lifespan],
        plugins=[problem_details_plugin(), *([server_plugin(observed)] if observed.enabled else [])],
        middleware=[
            *([] if observed.enabled else [TraceContextPassthrough]),
            DefineMiddleware(RequestTelemetryMiddleware, telemetry=observed),
            # Outside load shedding, so a shed admin request is audited too; inside the request's trace.
            DefineMiddleware(AuditTrail, audit=container.audit),
            # Inside the request telemetry, so a shed request is counted and traced as the 503 it answers.
            DefineMiddleware(AdmissionMiddleware, admission=container.admission),
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
        # What guards and the metrics route read: they run outside dependency injection.
        state=State({"limiter": container.limiter, "telemetry": observed}),
        logging_config=None,  # logging is configured once per process, by `ragwatch serve`
        debug=False,
    )


def _provide(service: T) -> Provide:
    """A dependency that is always ``service``: one instance per app, built by the container."""

    def provide() -> T:
        return service

    return Provide(provide, sync_to_thread=False, use_cache=True)
