"""What :class:`Client` and :class:`AsyncClient` have in common: how they are made."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, TypeVar

import httpx

from ragwatch_client._core import DEFAULT_TIMEOUT, Options

__all__ = ["BaseClient"]

HttpClient = TypeVar("HttpClient", httpx.Client, httpx.AsyncClient)
Transport = TypeVar("Transport", httpx.BaseTransport, httpx.AsyncBaseTransport)


class BaseClient(Generic[HttpClient, Transport]):
    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        max_retries: int = 2,
        max_retry_wait: float = 60.0,
        headers: Mapping[str, str] | None = None,
        http_client: HttpClient | None = None,
        transport: Transport | None = None,
    ) -> None:
        """A client of the ragwatch API at ``base_url``.

        - ``base_url``: default ``RAGWATCH_URL``, else ``http://127.0.0.1:8000``.
        - ``token``: the bearer token (a JWT); default ``RAGWATCH_TOKEN``. ``""`` sends none.
        - ``timeout``: seconds (or an ``httpx.Timeout``) for each attempt of a request; ``None``: none.
        - ``max_retries``: attempts after the first, for what may be retried (429, 503, and connection
          failures of requests that are safe to send twice).
        - ``max_retry_wait``: the longest ``Retry-After`` waited for, seconds; a longer one is raised at once.
        - ``headers``: sent with every request (``X-Tenant-Id`` and ``X-User-Id`` for a dev-mode server).
        - ``http_client``: an httpx client to send with (proxies, certificates, event hooks); it stays
          the caller's to close. ``transport``: the transport of the client made otherwise.
        """
        if http_client is not None and transport is not None:
            raise ValueError("give http_client or transport, not both")
        self._options = Options.resolve(
            base_url=base_url,
            token=token,
            timeout=timeout,
            max_retries=max_retries,
            max_retry_wait=max_retry_wait,
            headers=headers,
        )
        self._owns_http = http_client is None
        self._http: HttpClient = self._new_http(transport) if http_client is None else http_client

    @property
    def base_url(self) -> str:
        return self._options.base_url

    def _new_http(self, transport: Transport | None) -> HttpClient:
        raise NotImplementedError
