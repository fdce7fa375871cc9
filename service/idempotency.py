"""``Idempotency-Key``: a request repeated with the same key gets the first one's result, never a second effect.

A client that did not hear back (a timeout, a dropped connection) sends the request again with the same key.
The first request with a key claims it (``SET NX`` in Redis, so across replicas) for as long as it may run;
once it succeeds, its result is kept for ``ttl_s`` (24 h) and every repeat is answered with it, marked
``Idempotent-Replayed: true``. A repeat while the first still runs is a 409 (``Retry-After``); the same key
with another request (another body, another knowledge base) is a 422. A request that fails releases its
key, so the client may try again. Keys belong to one user of one tenant and one operation.

Without Redis the service cannot promise this across replicas, so a keyed request is a 503 while it is down.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio
import msgspec

from service.auth import Principal
from service.errors import IdempotencyKeyInUse, IdempotencyKeyReused, SharedStateUnavailable
from service.shared.health import RedisUnavailable
from service.shared.records import Records, record_key

__all__ = ["MAX_KEY_LENGTH", "Idempotency", "Replayable", "fingerprint"]

T = TypeVar("T")

MAX_KEY_LENGTH = 255
_OPERATION = "idempotency"


@dataclass(frozen=True, slots=True)
class Replayable(Generic[T]):
    value: T
    replayed: bool = False
    """Whether ``value`` is an earlier request's result, answered again for a repeat of its key."""


class _Entry(msgspec.Struct, array_like=True):
    fingerprint: str
    claim: str
    """Which request claimed the key: only it may store its result or free the key."""
    result: bytes | None = None
    """The JSON of the result once the request succeeded; ``None`` while it runs."""


_encode = msgspec.msgpack.Encoder().encode
_decode_entry = msgspec.msgpack.Decoder(_Entry).decode


def fingerprint(*parts: bytes | str) -> str:
    """A digest of what makes two requests the same request."""
    digest = hashlib.sha256()
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        digest.update(len(raw).to_bytes(8, "big") + raw)
    return digest.hexdigest()


class Idempotency:
    def __init__(self, records: Records, *, ttl_s: int = 86_400, running_s: int = 3_600) -> None:
        """``running_s``: how long a claim holds while its request runs (one that crashed frees it then); a
        request still running then can no longer store its result, so a repeat after it is done again."""
        self._records = records
        self._ttl_s = ttl_s
        self._running_s = running_s

    async def once(
        self,
        principal: Principal,
        key: str | None,
        *,
        operation: str,
        request: Sequence[bytes | str],
        compute: Callable[[], Awaitable[T]],
        result_type: type[T],
    ) -> Replayable[T]:
        """``compute()``'s result, or, for a repeat of ``key``, the first result. ``request``: what makes two
        requests the same (hashed). Without a key, ``compute()`` runs as for any request."""
        if key is None:
            return Replayable(await compute())
        record_key = _record_key(principal, operation, key)
        entry = _Entry(fingerprint(*request), claim=uuid.uuid4().hex)
        claimed = _encode(entry)
        try:
            found = await self._records.claim(_OPERATION, record_key, claimed, self._running_s)
        except RedisUnavailable:
            raise SharedStateUnavailable("Idempotency keys cannot be honoured while Redis is down.") from None
        if found is not None:
            return self._replay(_decode_entry(found), entry, result_type)
        try:
            value = await compute()
        except BaseException:
            with anyio.CancelScope(shield=True):  # a client that hung up still frees its key
                await self._settle(record_key, claimed, None)
            raise
        done = msgspec.structs.replace(entry, result=msgspec.json.encode(value))
        await self._settle(record_key, claimed, _encode(done))
        return Replayable(value)

    def _replay(self, earlier: _Entry, entry: _Entry, result_type: type[T]) -> Replayable[T]:
        if earlier.fingerprint != entry.fingerprint:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was used for another request; use a new key for a new request."
            )
        if earlier.result is None:
            raise IdempotencyKeyInUse("A request with this Idempotency-Key is still running; try again shortly.")
        return Replayable(msgspec.json.decode(earlier.result, type=result_type), replayed=True)

    async def _settle(self, record_key: str, claimed: bytes, done: bytes | None) -> None:
        """Store the result (``done``) or free the key (``None``), if the claim is still this request's.

        If Redis fails now, the claim runs out by itself, and a repeat after that is done again.
        """
        with contextlib.suppress(RedisUnavailable):
            await self._records.swap(_OPERATION, record_key, claimed, done, self._ttl_s)


def _record_key(principal: Principal, operation: str, key: str) -> str:
    return record_key("idempotency", principal.tenant_id, principal.user_id, operation, key)
