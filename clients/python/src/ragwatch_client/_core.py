"""What both clients share that is not I/O: their options, the description of a request (:class:`Call`), how
it becomes an ``httpx.Request`` and how a successful answer is decoded."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Generic, TypeVar

import httpx
import msgspec

from ragwatch_client._errors import UnexpectedResponseError
from ragwatch_client._models import Page
from ragwatch_client._retries import Retrying, RetryPolicy

__all__ = ["DEFAULT_TIMEOUT", "DEFAULT_URL", "Call", "Options", "build_request", "decoder", "page_decoder"]

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 120.0
"""Seconds; an answer may wait for an LLM that retries."""

try:
    _USER_AGENT = f"ragwatch-client/{version('ragwatch-client')} httpx/{httpx.__version__}"
except PackageNotFoundError:  # run from a source tree that was never installed
    _USER_AGENT = f"ragwatch-client httpx/{httpx.__version__}"


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request of the API, described without sending it, and how to read its successful answer."""

    method: str
    path: str
    """From the API's root (``/v1/...``), with every id already quoted."""
    decode: Callable[[bytes], T]
    body: bytes | None = None
    """A JSON body, encoded."""
    form: Mapping[str, str] | None = None
    """The fields of a multipart body, with ``file``."""
    file: tuple[str, bytes, str] | None = None
    """The uploaded file of a multipart body: its name, content and media type."""
    params: Mapping[str, str | int] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    retry_safe: bool = True
    """Whether sending it twice does nothing twice (so a connection failure may be retried)."""
    long_running: bool = False
    """Wait for the answer as long as the server takes (no read timeout)."""


@dataclass(frozen=True)
class Options:
    """A client's settings, resolved once when it is made."""

    base_url: str
    headers: Mapping[str, str]
    timeout: httpx.Timeout
    retry: RetryPolicy

    @classmethod
    def resolve(
        cls,
        *,
        base_url: str | None,
        token: str | None,
        timeout: float | httpx.Timeout | None,
        max_retries: int,
        max_retry_wait: float,
        headers: Mapping[str, str] | None,
    ) -> Options:
        """``base_url`` and ``token`` default to ``RAGWATCH_URL`` and ``RAGWATCH_TOKEN``."""
        base_url = base_url or os.environ.get("RAGWATCH_URL") or DEFAULT_URL
        token = os.environ.get("RAGWATCH_TOKEN") if token is None else token
        sent = {"User-Agent": _USER_AGENT, **(headers or {})}
        if token:
            sent["Authorization"] = f"Bearer {token}"
        return cls(
            base_url=base_url.rstrip("/"),
            headers=sent,
            timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
            retry=RetryPolicy(max_retries=max_retries, max_wait=max_retry_wait),
        )

    def retrying(self, call: Call[Any]) -> Retrying:
        return Retrying(self.retry, retry_safe=call.retry_safe)


def build_request(http: httpx.Client | httpx.AsyncClient, options: Options, call: Call[Any]) -> httpx.Request:
    """The request of ``call``, built by ``http`` so that its own defaults (headers, cookies) apply too."""
    headers = {**options.headers, **call.headers}
    if call.body is not None:
        headers["Content-Type"] = "application/json"
    timeout = options.timeout
    if call.long_running:
        timeout = httpx.Timeout(connect=timeout.connect, read=None, write=timeout.write, pool=timeout.pool)
    return http.build_request(
        call.method,
        options.base_url + call.path,
        content=call.body,
        data=call.form,
        files={"file": call.file} if call.file else None,
        params=call.params,
        headers=headers,
        timeout=timeout,
    )


def decoder(kind: type[T]) -> Callable[[bytes], T]:
    """A decoder of JSON bodies into ``kind``, raising :class:`UnexpectedResponseError` on anything else."""
    return _guarded(msgspec.json.Decoder(kind).decode)


def page_decoder(kind: type[T]) -> Callable[[bytes], Page[T]]:
    """A decoder of a page of ``kind``; a bare list (a server from before pagination) is one last page."""
    decode = msgspec.json.Decoder(Page[kind] | list[kind]).decode  # type: ignore[valid-type]

    def page(body: bytes) -> Page[T]:
        decoded = decode(body)
        return decoded if isinstance(decoded, Page) else Page(data=decoded)

    return _guarded(page)


def no_content(body: bytes) -> None:
    """The decoder of a ``204 No Content``."""


def _guarded(decode: Callable[[bytes], T]) -> Callable[[bytes], T]:
    def guarded(body: bytes) -> T:
        try:
            return decode(body)
        except msgspec.MsgspecError as exc:
            raise UnexpectedResponseError(f"The answer is not what the API sends: {exc}") from exc

    return guarded
