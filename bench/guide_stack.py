"""The peer the cached chat is measured against: the enterprise guide's own stack, as its seed document chose it.

FastAPI, python-jose for the JWT, slowapi (the ``limits`` library on Redis) for per-user and per-tenant limits
per minute and per hour, aiocache on Redis for the answer cache, prometheus-fastapi-instrumentator for
``/metrics`` and structlog for a JSON access line per request. Untraced, as the guide ships it. It answers
``POST /v1/chat`` from the answer cache in the same Redis ragwatch uses, with the same token, and is served by
``uvicorn bench.guide_stack:app`` on the same core as the ragwatch variants.

Written without decorators so that ``make lint`` type-checks it without the bench extra installed (the
libraries are then unknown to mypy, and an unknown decorator would make the function untyped).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiocache import Cache
from aiocache.serializers import JsonSerializer
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from jose import JWTError, jwt
from prometheus_fastapi_instrumentator import Instrumentator
from pydantic import BaseModel
from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded

__all__ = ["app"]

REDIS_URL = os.environ.get("GUIDE_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = os.environ.get("GUIDE_JWT_SECRET", "")
LIMIT = os.environ.get("GUIDE_LIMIT", "1000000000")

structlog.configure(
    processors=[structlog.processors.TimeStamper(fmt="iso"), structlog.processors.JSONRenderer()],
    logger_factory=structlog.PrintLoggerFactory(sys.stdout),
    wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
)
access_log = structlog.get_logger("access")


class ChatBody(BaseModel):
    kb_id: str
    question: str


def _user(request: Request) -> str:
    return str(request.state.user["sub"])


def _tenant(request: Request) -> str:
    return str(request.state.user["tenant_id"])


limiter = Limiter(key_func=_user, storage_uri=REDIS_URL)
cache = Cache(
    Cache.REDIS,
    endpoint=REDIS_URL.split("//")[1].split(":")[0],
    port=int(REDIS_URL.rsplit(":", 1)[1].split("/")[0]),
    namespace="guide",
    serializer=JsonSerializer(),
)


async def authenticated(request: Request) -> dict[str, Any]:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        raise HTTPException(status_code=401, detail="missing bearer token")
    try:
        claims: dict[str, Any] = jwt.decode(header[7:], SECRET, algorithms=["HS256"])
    except JWTError as exc:
        raise HTTPException(status_code=401, detail="invalid token") from exc
    if "member" not in claims.get("roles", []) and "admin" not in claims.get("roles", []):
        raise HTTPException(status_code=403, detail="needs the member role")
    request.state.user = claims
    return claims


async def chat(request: Request, body: ChatBody, user: dict[str, Any] = Depends(authenticated)) -> dict[str, Any]:  # noqa: B008
    key = hashlib.sha256(f"{user['tenant_id']}|{body.kb_id}|{' '.join(body.question.lower().split())}".encode())
    cached: dict[str, Any] | None = await cache.get(key.hexdigest())
    if cached is not None:
        return {**cached, "cached": True}
    answer = {
        "answer": "Every employee gets twenty-five days of paid vacation per year. [1]",
        "citations": [{"document_id": "handbook", "title": "Handbook", "score": 1.0}],
        "model": "extractive",
        "usage": {"input_tokens": 120, "output_tokens": 14},
    }
    await cache.set(key.hexdigest(), answer, ttl=3600)
    return {**answer, "cached": False}


def too_many_requests(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RateLimitExceeded)
    return _rate_limit_exceeded_handler(request, exc)


async def health() -> dict[str, str]:
    return {"status": "ok"}


async def log_requests(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    started = time.perf_counter()
    response = await call_next(request)
    access_log.info(
        "request",
        method=request.method,
        path=request.url.path,
        status=response.status_code,
        latency_ms=round((time.perf_counter() - started) * 1000, 2),
    )
    return response


app = FastAPI()
app.state.limiter = limiter
app.add_exception_handler(RateLimitExceeded, too_many_requests)
app.middleware("http")(log_requests)
limited = limiter.limit(f"{LIMIT}/minute;{LIMIT}/hour")(
    limiter.limit(f"{LIMIT}/minute;{LIMIT}/hour", key_func=_tenant)(chat)
)
app.add_api_route("/v1/chat", limited, methods=["POST"])
app.add_api_route("/health/live", health, methods=["GET"])
Instrumentator().instrument(app).expose(app)
