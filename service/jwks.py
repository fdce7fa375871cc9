"""The issuer's signing keys, fetched from its JWKS endpoint and kept in memory.

pyjwt's ``PyJWKClient`` does the fetching (http(s) only, no redirects, a timeout, parsing into key objects bound
to their algorithm); this module decides when to fetch, because the client's own cache holds a lock across the
network call, retries a failing endpoint on every request and forgets its keys once they expire. Here:

- the key set is fetched again once it is older than ``jwks_cache_s``; a key the issuer withdraws stops verifying
  tokens then;
- the endpoint is asked at most once per ``jwks_cooldown_s``, whatever the traffic: an unknown ``kid`` (a key
  rotated in, or an attacker's invention) triggers one refetch, and tokens naming made-up kids by the thousand
  trigger no more;
- one fetch at a time: requests needing it wait for the same one, and the others never wait;
- while the endpoint cannot be fetched, the last key set fetched keeps verifying tokens.

Nothing a token says is ever fetched: only the configured URL is.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

import jwt

from service.errors import RagwatchError

__all__ = ["AuthUnavailable", "JwksKeys", "UnknownKey"]

_FETCH_FAILURES = (jwt.PyJWTError, OSError, ValueError)
"""What a fetch raises when the endpoint is down, slow or answers something other than a key set."""
logger = logging.getLogger("ragwatch.auth")


class AuthUnavailable(RagwatchError):
    """The keys that verify tokens cannot be fetched (JWKS endpoint down or broken): not the caller's fault."""

    status, slug, title = 503, "auth-unavailable", "Tokens cannot be verified right now"


class UnknownKey(Exception):
    """The key set, fetched as recently as the cool-down allows, has no key of this ``kid``."""


class JwksKeys:
    """The keys published at one JWKS URL, by ``kid``."""

    def __init__(
        self,
        url: str,
        *,
        cache_s: float,
        cooldown_s: float,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        # The client's own cache is off: it fetches each time it is asked, and only this class asks.
        self._client = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=timeout_s)
        self._cache_s = cache_s
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        """When the key set in ``_keys`` was fetched (``None``: never)."""
        self._asked_at: float | None = None
        """When the endpoint was last asked, whatever came of it."""
        self._failing = False
        """The last request to the endpoint failed."""
        self._fetch: asyncio.Task[None] | None = None

    async def key(self, kid: str) -> jwt.PyJWK:
        """The key of ``kid``; :class:`UnknownKey` if the issuer has none, :class:`AuthUnavailable` if that cannot
        be told because the endpoint cannot be fetched."""
        now = self._clock()
        if self._fetched_at is None or now - self._fetched_at >= self._cache_s:
            await self._refresh(now)
        key = self._keys.get(kid)
        if key is None:
            await self._refresh(now)
            key = self._keys.get(kid)
        if key is not None:
            return key
        if self._failing or self._fetched_at is None:
            raise self._unavailable()
        raise UnknownKey(kid)

    async def _refresh(self, now: float) -> None:
        """Fetch the key set anew, or wait for the fetch in flight; nothing within the cool-down of the last one."""
        if self._fetch is None:
            if self._asked_at is not None and now - self._asked_at < self._cooldown_s:
                return
            self._asked_at = now
            self._fetch = asyncio.create_task(self._fetch_keys())
        # Shielded: a caller that goes away (a client disconnecting) must not cancel the fetch for the others.
        await asyncio.shield(self._fetch)

    async def _fetch_keys(self) -> None:
        try:
            # The client fetches with blocking urllib, hence the thread.
            fetched = await asyncio.to_thread(self._client.get_signing_keys)
        except _FETCH_FAILURES as exc:
            self._failing = True
            kept = "keeping the keys fetched before" if self._keys else "no keys to use"
            logger.warning("cannot fetch the JWKS at %s (%s): %s", self.url, kept, exc)
            return
        finally:
            self._fetch = None
        keys: dict[str, jwt.PyJWK] = {}
        for key in fetched:  # each bound to its algorithm: a kid never lets a token pick how its key is used
            keys.setdefault(str(key.key_id), key)
        self._keys, self._fetched_at, self._failing = keys, self._clock(), False

    def _unavailable(self) -> AuthUnavailable:
        """The 503, with ``Retry-After`` the time until the endpoint may be asked again."""
        now = self._clock()
        asked_at = self._asked_at if self._asked_at is not None else now
        retry_after = max(1, math.ceil(asked_at + self._cooldown_s - now))
        return AuthUnavailable(
            "The keys that verify tokens cannot be fetched; try again shortly.",
            headers={"Retry-After": str(retry_after)},
        )
