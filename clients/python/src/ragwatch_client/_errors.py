"""One family of exceptions: every error the client raises is a :class:`RagwatchError`.

The server answers errors as RFC 9457 problems (``application/problem+json``): the exception carries the
problem's ``type``, ``title`` and ``detail``, the status, and the trace id of the request. Subclasses follow
the status code, so ``except NotFoundError`` reads as what it catches; ``type`` (or ``slug``) tells kinds
with the same status apart (``needs-ocr`` and ``encrypted-document`` are both 422).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import msgspec

from ragwatch_client._models import Problem

__all__ = [
    "APIConnectionError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RagwatchError",
    "RateLimitError",
    "ServerError",
    "ServiceUnavailableError",
    "UnexpectedResponseError",
    "UnprocessableError",
    "UnsupportedMediaTypeError",
    "connection_error",
    "error_for_problem",
    "error_from_response",
    "trace_id_of",
]

PROBLEM_BASE = "https://ragwatch.dev/problems/"
"""Every problem ``type`` of the server is this followed by a slug such as ``not-found``."""
_TRACE_HEADER = re.compile(r"^[0-9a-f]{2}-(?P<trace_id>[0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


class RagwatchError(Exception):
    """Base of every error of the client."""

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        type: str = "about:blank",
        title: str = "",
        trace_id: str | None = None,
        retry_after: float | None = None,
        errors: list[dict[str, Any]] | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        """The HTTP status; ``None`` when no response arrived (:class:`APIConnectionError`)."""
        self.type = type
        """The problem type URI, stable per kind of error (``https://ragwatch.dev/problems/not-found``)."""
        self.title = title
        self.trace_id = trace_id
        """The request's trace id (from the ``traceresponse`` header): find its spans and logs with it."""
        self.retry_after = retry_after
        """Seconds the server asked the client to wait before trying again (``Retry-After``), if it said."""
        self.errors = errors or []
        """The fields that failed validation, on a 400 for an invalid body."""
        self.response = response

    @property
    def slug(self) -> str:
        """The last part of ``type``: ``not-found``, ``rate-limited``, ``needs-ocr``…"""
        return self.type.removeprefix(PROBLEM_BASE)

    def __str__(self) -> str:
        if self.status is None:
            return self.detail
        return f"{self.status} {self.title}: {self.detail}" if self.title else f"{self.status} {self.detail}"


# --- no answer -------------------------------------------------------------------------------------------


class APIConnectionError(RagwatchError):
    """The server could not be reached, or the connection broke before a whole answer arrived."""


class APITimeoutError(APIConnectionError):
    """The server did not answer within the client's timeout."""


class UnexpectedResponseError(RagwatchError):
    """The server answered with something this client cannot read (not the API, or a broken stream)."""


# --- the caller's fault -----------------------------------------------------------------------------------


class BadRequestError(RagwatchError):
    """400: invalid JSON, wrong types, unknown fields, blank text."""


class AuthenticationError(RagwatchError):
    """401: a missing, malformed, expired or badly signed token."""


class PermissionDeniedError(RagwatchError):
    """403: the token's roles do not allow this (a member doing an admin's action)."""


class NotFoundError(RagwatchError):
    """404: no such knowledge base, document or conversation in the caller's tenant."""


class ConflictError(RagwatchError):
    """409: the resource is in a conflicting state, or the idempotency key is still in use."""


class PayloadTooLargeError(RagwatchError):
    """413: the body, or the document in it, is past a limit of the server."""


class UnsupportedMediaTypeError(RagwatchError):
    """415: a file of a type the server does not ingest."""


class UnprocessableError(RagwatchError):
    """422: a damaged, encrypted or scanned document, or an idempotency key reused for another request."""


class RateLimitError(RagwatchError):
    """429: a rate limit is reached; ``retry_after`` says when to try again."""


# --- the server's fault -----------------------------------------------------------------------------------


class ServerError(RagwatchError):
    """5xx: the server or its LLM provider failed."""


class ServiceUnavailableError(ServerError):
    """503: the LLM provider or the rate limiter is unavailable for now."""


# --- translation ----------------------------------------------------------------------------------------

_BY_STATUS: dict[int, type[RagwatchError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: UnprocessableError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}
_decode_problem = msgspec.json.Decoder(Problem).decode


def error_for_problem(problem: Problem, status: int, response: httpx.Response) -> RagwatchError:
    """The exception of ``problem``, answered with ``status`` in ``response`` (whose headers it reads)."""
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else RagwatchError)
    return kind(
        problem.detail or response.reason_phrase,
        status=status,
        type=problem.type,
        title=problem.title or response.reason_phrase,
        trace_id=problem.trace_id or trace_id_of(response.headers),
        retry_after=retry_after(response.headers),
        errors=problem.errors,
        response=response,
    )


def error_from_response(response: httpx.Response) -> RagwatchError:
    """The exception of an error response, whose body has been read: its problem, or what it says."""
    try:
        problem = _decode_problem(response.content)
    except msgspec.MsgspecError:
        problem = Problem(detail=response.text.strip()[:500])
    return error_for_problem(problem, response.status_code, response)


def connection_error(exc: httpx.TransportError) -> APIConnectionError:
    """The exception of a transport failure (to raise ``from exc``)."""
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"The server did not answer in time ({type(exc).__name__}).")
    url = exc.request.url if _has_request(exc) else "the server"
    return APIConnectionError(f"Cannot reach {url}: {exc or type(exc).__name__}")


def _has_request(exc: httpx.TransportError) -> bool:
    try:
        exc.request  # noqa: B018 - raises RuntimeError when the error was raised outside a request
    except RuntimeError:
        return False
    return True


def trace_id_of(headers: httpx.Headers) -> str | None:
    """The trace id of a response: its W3C ``traceresponse`` header, else an echoed ``traceparent``."""
    for name in ("traceresponse", "traceparent"):
        match = _TRACE_HEADER.match(headers.get(name, "").strip())
        if match:
            return match["trace_id"]
    return None


def retry_after(headers: httpx.Headers) -> float | None:
    """``Retry-After`` in seconds (it may be seconds or an HTTP date), or ``None`` when absent or unreadable."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, by RFC 5322
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
