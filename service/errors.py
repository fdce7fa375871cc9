"""Domain errors, and the one place they become RFC 9457 problem responses.

Each error kind has a stable ``type`` URI (``https://ragwatch.dev/problems/<slug>``) that clients may branch
on; ``title`` is fixed per kind and ``detail`` explains this occurrence.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any, ClassVar

from litestar import Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsException,
    ProblemDetailsPlugin,
)

from service.models import Problem

__all__ = [
    "BadRequest",
    "BudgetExceeded",
    "Conflict",
    "DocumentTooLarge",
    "EncryptedDocument",
    "Forbidden",
    "IdempotencyKeyInUse",
    "IdempotencyKeyReused",
    "NeedsOcr",
    "NotFound",
    "Overloaded",
    "ParseTimeout",
    "ProviderError",
    "ProviderRateLimited",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RagwatchError",
    "RateLimited",
    "RateLimiterUnavailable",
    "SharedStateUnavailable",
    "Unauthorized",
    "UnreadableDocument",
    "UnsupportedMediaType",
    "error_facts",
    "problem",
    "problem_details_plugin",
    "problem_responses",
    "unexpected_error_handlers",
]

PROBLEM_BASE = "https://ragwatch.dev/problems/"
logger = logging.getLogger("ragwatch.errors")


class RagwatchError(Exception):
    """Base of every error the API reports on purpose."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal server error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


# --- the caller's fault ---------------------------------------------------------------------------------


class BadRequest(RagwatchError):
    status, slug, title = 400, "invalid-request", "The request is not valid"


class Unauthorized(RagwatchError):
    status, slug, title = 401, "unauthenticated", "Authentication required"

    def __init__(self, detail: str, *, challenge: str = 'Bearer realm="ragwatch", error="invalid_token"') -> None:
        """``challenge``: the ``WWW-Authenticate`` value; RFC 6750 wants no error code when no token was sent."""
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class Forbidden(RagwatchError):
    status, slug, title = 403, "forbidden", "Not allowed for this role"


class NotFound(RagwatchError):
    status, slug, title = 404, "not-found", "No such resource"


class Conflict(RagwatchError):
    status, slug, title = 409, "conflict", "The resource is in a conflicting state"


class IdempotencyKeyInUse(RagwatchError):
    status, slug, title = 409, "idempotency-key-in-use", "A request with this Idempotency-Key is still running"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Retry-After": "1"})


class IdempotencyKeyReused(RagwatchError):
    status, slug, title = 422, "idempotency-key-reused", "The Idempotency-Key was used for another request"


class UnsupportedMediaType(RagwatchError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported content type"


class DocumentTooLarge(RagwatchError):
    status, slug, title = 413, "document-too-large", "The document exceeds a parsing limit"


class UnreadableDocument(RagwatchError):
    status, slug, title = 422, "unreadable-document", "The document cannot be read"


class EncryptedDocument(RagwatchError):
    status, slug, title = 422, "encrypted-document", "The document is encrypted"


class NeedsOcr(RagwatchError):
    status, slug, title = 422, "needs-ocr", "The document has no text layer"


class ParseTimeout(RagwatchError):
    status, slug, title = 422, "parse-timeout", "The document took too long to parse"


class RateLimited(RagwatchError):
    status, slug, title = 429, "rate-limited", "Too many requests"


class BudgetExceeded(RagwatchError):
    status, slug, title = 429, "budget-exceeded", "The tenant's LLM token budget is used up"


class RateLimiterUnavailable(RagwatchError):
    status, slug, title = 503, "rate-limiter-unavailable", "The rate limiter is unavailable"


class SharedStateUnavailable(RagwatchError):
    """Redis, which holds what every replica must see alike (conversations, idempotent results), is down."""

    status, slug, title = 503, "shared-state-unavailable", "Shared state is unavailable"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Retry-After": "1"})


class Overloaded(RagwatchError):
    """The process already serves as many chat, search and ingestion requests as it may at once
    (``RAGWATCH_MAX_CONCURRENT_REQUESTS``): refused at once rather than queued, to be retried shortly."""

    status, slug, title = 503, "overloaded", "The service is at capacity"

    def __init__(self, detail: str, *, retry_after_s: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)})


# --- the LLM provider's fault ---------------------------------------------------------------------------


class ProviderError(RagwatchError):
    status, slug, title = 502, "llm-provider-error", "The LLM provider failed"
    transient_by_default: ClassVar[bool] = False
    error_type: str | None = None
    """This failure's ``error.type`` on spans and in ``rag_llm_calls_total`` when the slug says too little
    (``circuit_open``: the call was never made)."""

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, transient: bool | None = None) -> None:
        """``transient``: the provider's own passing fault (5xx, 408, 409, 429, unreachable, too slow), which a
        retry may cure and the circuit breaker counts; not a call the provider refused for what it asked."""
        super().__init__(detail, headers=headers)
        self.transient = self.transient_by_default if transient is None else transient


class ProviderRateLimited(ProviderError):
    status, slug, title = 503, "llm-provider-rate-limited", "The LLM provider is rate limiting us"
    transient_by_default = True


class ProviderUnavailable(ProviderError):
    status, slug, title = 503, "llm-provider-unavailable", "The LLM provider cannot be reached"
    transient_by_default = True


class ProviderTimeout(ProviderError):
    status, slug, title = 504, "llm-provider-timeout", "The LLM provider did not answer in time"
    transient_by_default = True


# --- translation ----------------------------------------------------------------------------------------

_HTTP_SLUGS = {
    400: ("invalid-request", "The request is not valid"),
    401: ("unauthenticated", "Authentication required"),
    404: ("not-found", "No such resource"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "The request body is too large"),
    415: ("unsupported-media-type", "Unsupported content type"),
}


def error_facts(exc: Exception) -> tuple[int, str, str, dict[str, str]]:
    """(status, problem slug, detail, headers) of any error as the API reports it, for routes that answer
    errors in another shape than RFC 9457 (the OpenAI-compatible ones)."""
    if isinstance(exc, RagwatchError):
        return exc.status, exc.slug, exc.detail, dict(exc.headers)
    if isinstance(exc, HTTPException):
        slug, _ = _HTTP_SLUGS.get(exc.status_code, ("http-error", exc.detail))
        headers = dict(exc.headers or {})
        if isinstance(exc, NotAuthorizedException):
            headers.setdefault("WWW-Authenticate", "Bearer")
        return exc.status_code, slug, exc.detail, headers
    if isinstance(exc, UnicodeDecodeError):
        return 400, "invalid-request", f"The request body is not valid UTF-8 (byte {exc.start}).", {}
    return 500, "internal-error", "An unexpected error occurred; the trace id identifies it.", {}


def problem(exc: RagwatchError) -> Problem:
    """The RFC 9457 body of ``exc``: what an error response carries, and an SSE ``error`` event too."""
    return Problem(type=PROBLEM_BASE + exc.slug, title=exc.title, status=exc.status, detail=exc.detail)


def _domain_problem(exc: RagwatchError) -> ProblemDetailsException:
    body = problem(exc)
    return ProblemDetailsException(
        status_code=body.status, type_=body.type, title=body.title, detail=body.detail, headers=exc.headers or None
    )


def _http_problem(exc: HTTPException) -> ProblemDetailsException:
    slug, title = _HTTP_SLUGS.get(exc.status_code, ("http-error", exc.detail))
    extra: dict[str, Any] | None = None
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        extra = {"errors": exc.extra}
    headers = dict(exc.headers or {})
    if isinstance(exc, NotAuthorizedException):
        headers.setdefault("WWW-Authenticate", "Bearer")
    return ProblemDetailsException(
        status_code=exc.status_code,
        type_=PROBLEM_BASE + slug,
        title=title,
        detail=exc.detail,
        headers=headers or None,
        extra=extra,
    )


def _undecodable_problem(exc: UnicodeDecodeError) -> ProblemDetailsException:
    """A body that is not UTF-8 reaches the framework's JSON decoder as this; it is the caller's fault."""
    return _domain_problem(BadRequest(f"The request body is not valid UTF-8 (byte {exc.start})."))


def _unexpected_problem(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    problem = ProblemDetailsException(
        status_code=500,
        type_=PROBLEM_BASE + "internal-error",
        title="Internal server error",
        detail="An unexpected error occurred; the trace id identifies it.",
    )
    return problem.to_response(request)


def problem_details_plugin() -> ProblemDetailsPlugin:
    """The plugin that renders every error as ``application/problem+json``."""
    return ProblemDetailsPlugin(
        ProblemDetailsConfig(
            exception_to_problem_detail_map={
                RagwatchError: _domain_problem,
                HTTPException: _http_problem,
                UnicodeDecodeError: _undecodable_problem,
            }
        )
    )


_RESPONSE_DESCRIPTIONS = {
    400: "The request is not valid (malformed JSON, wrong or missing fields)",
    401: "No valid bearer token",
    403: "The token's roles do not allow this",
    404: "No such resource in the caller's tenant",
    413: "The body is larger than RAGWATCH_MAX_BODY_BYTES, or the document exceeds a parsing limit",
    415: "The content type or file type is not supported",
    422: "The file is of a supported type but cannot be ingested (damaged, encrypted, images only, too slow)",
}


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI ``responses`` documenting ``statuses`` as RFC 9457 problems."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            generate_examples=False,
            media_type="application/problem+json",
            description=_RESPONSE_DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
        )
        for status in statuses
    }


unexpected_error_handlers: dict[int | type[Exception], Any] = {Exception: _unexpected_problem}
