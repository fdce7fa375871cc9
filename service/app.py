"""The Litestar application: routes, auth, problem details, OpenAPI and the resources' lifespan."""

from __future__ import annotations

import logging
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
from service.auth import Authenticator, AuthMiddleware, DevHeaderAuthenticator, JWTAuthenticator
from service.config import Settings
from service.errors import problem_details_plugin, unexpected_error_handlers
from service.providers import Providers, build_providers
from service.rag import RagPipeline
from service.store import Store

__all__ = ["create_app"]

logger = logging.getLogger("ragwatch")


def build_authenticator(settings: Settings) -> Authenticator:
    if settings.auth.auth_mode == "dev":
        logger.warning(
            "RAGWATCH_AUTH_MODE=dev: trusting X-Tenant-Id/X-User-Id headers without a token; never expose this"
        )
        return DevHeaderAuthenticator()
    return JWTAuthenticator(settings.auth)


def create_app(settings: Settings, providers: Providers | None = None) -> Litestar:
    """The app for ``settings``. ``providers`` defaults to the ones the settings choose."""
    chosen = providers or build_providers(settings)

    @asynccontextmanager
    async def resources(app: Litestar) -> AsyncIterator[None]:
        store = await Store.open(
            settings.lancedb_uri,
            dimensions=chosen.embedder.dimensions,
            read_consistency_s=settings.storage.read_consistency_s,
            ann_index_min_rows=settings.storage.ann_index_min_rows,
        )
        app.state.pipeline = RagPipeline(store, chosen.embedder, chosen.answerer, settings.rag)
        try:
            yield
        finally:
            await store.close()
            await chosen.aclose()

    v1 = Router(
        path="/v1",
        route_handlers=[KnowledgeBaseController, DocumentController, chat],
        middleware=[DefineMiddleware(AuthMiddleware, authenticator=build_authenticator(settings))],
        dependencies={"principal": Provide(provide_principal, sync_to_thread=False)},
        security=[{"bearer": []}],
    )
    return Litestar(
        route_handlers=[v1, live, ready],
        dependencies={"pipeline": Provide(provide_pipeline, sync_to_thread=False)},
        lifespan=[resources],
        plugins=[problem_details_plugin()],
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
        state=State({"settings": settings}),
        debug=False,
    )
