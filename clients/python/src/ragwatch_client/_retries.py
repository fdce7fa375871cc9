"""When to send a request again, and after how long: decisions without I/O, shared by both clients.

A request is sent again after

- a 429 (a rate limit) or a 503 (the LLM provider or the rate limiter unavailable): the server did nothing;
- a 409 ``idempotency-key-in-use``: an earlier attempt of the same request is still running on the server;
- a connection failure or a timeout, but only when sending it twice cannot do anything twice: reads,
  deletes, searches, and creations that carry an ``Idempotency-Key`` (the client gives one to every creation).

It waits what ``Retry-After`` says; a server asking for longer than ``max_wait`` gets the error raised at once
(with its ``retry_after``) rather than a client asleep for an hour. Without ``Retry-After``, the wait grows
exponentially from ``backoff`` (0.5 s, 1 s, 2 s… up to ``max_backoff``), each a random 50 to 100 % of it, so
that clients refused together do not come back together.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx

from ragwatch_client._errors import RagwatchError, connection_error, error_from_response

__all__ = ["RetryPolicy", "Retrying"]

_RETRIED_STATUSES = frozenset({429, 503})
_KEY_IN_USE = "idempotency-key-in-use"


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 2
    """Attempts after the first one (0: never send again)."""
    max_wait: float = 60.0
    """The longest ``Retry-After`` honoured, seconds; a longer one is raised at once."""
    backoff: float = 0.5
    """The first wait when the server gives no ``Retry-After``, seconds; doubled for each retry."""
    max_backoff: float = 8.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.max_wait < 0 or self.backoff < 0:
            raise ValueError("max_retries, max_retry_wait and backoff must not be negative")

    def wait(self, retry: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry number ``retry`` (from 0), or ``None`` if it should not happen."""
        if retry >= self.max_retries:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_wait else None
        ceiling = min(self.max_backoff, self.backoff * 2.0**retry)
        return ceiling * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not a secret


class Retrying:
    """The retries of one request. The client sends; after each failure it asks how long to wait before
    sending again, and the answer is a number of seconds or the exception to raise."""

    def __init__(self, policy: RetryPolicy, *, retry_safe: bool) -> None:
        self._policy = policy
        self._retry_safe = retry_safe
        self.retries = 0
        """Retries granted so far."""

    def after_response(self, response: httpx.Response) -> float:
        """The wait before sending again after the error ``response`` (its body read); raises its error when
        it is not to be retried."""
        error = error_from_response(response)
        retried = response.status_code in _RETRIED_STATUSES or (
            response.status_code == 409 and error.slug == _KEY_IN_USE
        )
        if not retried:
            raise error
        return self._next(error, error.retry_after)

    def after_failure(self, exc: httpx.TransportError) -> float:
        """The wait before sending again after a transport failure; raises it (as
        :class:`APIConnectionError`) when the request is not safe to send twice or no retry is left."""
        error = connection_error(exc)
        if not self._retry_safe:
            raise error from exc
        try:
            return self._next(error, None)
        except RagwatchError:
            raise error from exc

    def _next(self, error: RagwatchError, retry_after: float | None) -> float:
        wait = self._policy.wait(self.retries, retry_after)
        if wait is None:
            raise error
        self.retries += 1
        return wait
