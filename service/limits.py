"""Rate limits per tenant and per user, on chat and on ingestion, per minute and per hour.

Each request is decided atomically where the counters live: in Redis one Lua script checks every window of
the request (tenant and user, minute and hour) and counts the request in all of them only if none is full,
so any number of processes sharing Redis enforce one global limit exactly; ``memory://`` does the same in
one process. Written here rather than taken from the ``limits`` library because that spends a command per
limit and window, while a request here must be decided in one round trip.

Windows are fixed (aligned on the minute and the hour): a refused request learns exactly when to retry.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, TypeGuard

import msgspec
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from service.config import RateLimitSettings, SettingsError
from service.errors import RateLimited, RateLimiterUnavailable
from telemetry import Telemetry, stage
from telemetry.redis import redis_call_in_current_span

if TYPE_CHECKING:
    from service.shared_state import RedisHealth

__all__ = ["Decision", "MemoryCounters", "RateLimiter", "RedisCounters", "load_overrides"]

_PERIOD_SECONDS = {"minute": 60, "hour": 3600}
Action = Literal["chat", "ingest"]

# KEYS: one counter per window, then the keys to read; ARGV: the number of counters, their limits, then their
# lifetimes in seconds. Returns {{1, count1, count2, ...}, values} when the request is counted (values: the read
# keys' values, nil where absent), {{0, i, count_i}, {}} when window i is full.
_CHECK_AND_COUNT = """
local n = tonumber(ARGV[1])
for i = 1, n do
  local count = tonumber(redis.call('GET', KEYS[i]) or '0')
  if count >= tonumber(ARGV[1 + i]) then
    return {{0, i, count}, {}}
  end
end
local counts = {1}
for i = 1, n do
  local count = redis.call('INCR', KEYS[i])
  if count == 1 then
    redis.call('EXPIRE', KEYS[i], ARGV[1 + n + i])
  end
  counts[i + 1] = count
end
local values = {}
if #KEYS > n then
  values = redis.call('MGET', unpack(KEYS, n + 1))
end
return {counts, values}
"""


class RedisUnavailable(Exception):
    """Redis is known to be down: the counters are not called until it answers again."""


class Counters(Protocol):
    async def check_and_count(
        self, keys: Sequence[str], limits: Sequence[int], ttls: Sequence[int], read: Sequence[str] = ()
    ) -> tuple[list[int], list[bytes | None]]:
        """Count one request in every window if none is full: the script's reply (see ``_CHECK_AND_COUNT``);
        with it, the values of the ``read`` keys (what the request will look up next, in the same round trip)."""
        ...


class RedisCounters:
    """The script decides the request and reads its keys: one command, one round trip to Redis.

    ``EVALSHA`` is sent directly (the script is loaded once, and again if Redis lost it): redis-py's ``Script``
    would check that the script exists with an extra round trip on every request. One command rather than a
    pipeline of the script and an ``MGET``: a pipeline costs more in the client than the command it saves.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._sha = hashlib.sha1(_CHECK_AND_COUNT.encode()).hexdigest()  # noqa: S324  # Redis names scripts by SHA-1

    async def check_and_count(
        self, keys: Sequence[str], limits: Sequence[int], ttls: Sequence[int], read: Sequence[str] = ()
    ) -> tuple[list[int], list[bytes | None]]:
        script_keys = [*keys, *read]
        script_args = [len(keys), *limits, *ttls]
        with redis_call_in_current_span("EVALSHA"):
            try:
                reply = await self._evalsha(script_keys, script_args)
            except NoScriptError:
                await self._redis.script_load(_CHECK_AND_COUNT)
                reply = await self._evalsha(script_keys, script_args)
        if not _is_counted_reply(reply, len(read)):
            raise ResponseError("the rate-limit script's reply is not what it returns")
        counts, values = reply
        return counts, values

    async def _evalsha(self, keys: list[str], args: list[int]) -> object:
        reply: object = await self._redis.evalsha(self._sha, len(keys), *keys, *args)
        return reply


def _is_counted_reply(reply: object, reads: int) -> TypeGuard[list[list[Any]]]:
    """``{counts, values}`` as the script returns it: integers, then ``reads`` values (none when refused)."""
    if not isinstance(reply, list) or len(reply) != 2:
        return False
    counts, values = reply
    return (
        isinstance(counts, list)
        and bool(counts)
        and all(isinstance(value, int) for value in counts)
        and isinstance(values, list)
        and len(values) == (reads if counts[0] == 1 else 0)
        and all(value is None or isinstance(value, bytes) for value in values)
    )


class MemoryCounters:
    """The same decision for a single process; no ``await`` inside, so it is atomic on the event loop.

    ``reader`` reads the ``read`` keys (from the in-process cache) after the decision.
    """

    def __init__(self, reader: Callable[[Sequence[str]], Awaitable[list[bytes | None]]] | None = None) -> None:
        self._counts: dict[str, tuple[int, float]] = {}
        self._reader = reader

    async def check_and_count(
        self, keys: Sequence[str], limits: Sequence[int], ttls: Sequence[int], read: Sequence[str] = ()
    ) -> tuple[list[int], list[bytes | None]]:
        counts = self._count(keys, limits, ttls)
        values: list[bytes | None] = [None] * len(read)
        if read and self._reader is not None:
            values = await self._reader(read)
        return counts, values

    def _count(self, keys: Sequence[str], limits: Sequence[int], ttls: Sequence[int]) -> list[int]:
        now = time.monotonic()
        current = [self._current(key, now) for key in keys]
        for index, (count, limit) in enumerate(zip(current, limits, strict=True), start=1):
            if count >= limit:
                return [0, index, count]
        for key, count, ttl in zip(keys, current, ttls, strict=True):
            expires = self._counts[key][1] if count else now + ttl
            self._counts[key] = (count + 1, expires)
        if len(self._counts) > 100_000:
            self._counts = {key: value for key, value in self._counts.items() if value[1] > now}
        return [1, *(count + 1 for count in current)]

    def _current(self, key: str, now: float) -> int:
        count, expires = self._counts.get(key, (0, 0.0))
        return count if expires > now else 0


class Override(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A tenant's own limits; any left out are the settings' defaults."""

    per_minute: Annotated[int, msgspec.Meta(ge=1)] | None = None
    per_hour: Annotated[int, msgspec.Meta(ge=1)] | None = None
    tenant_per_minute: Annotated[int, msgspec.Meta(ge=1)] | None = None
    tenant_per_hour: Annotated[int, msgspec.Meta(ge=1)] | None = None


def load_overrides(path: str | None) -> dict[str, Override]:
    if path is None:
        return {}
    try:
        return msgspec.json.decode(Path(path).read_bytes(), type=dict[str, Override])
    except OSError as exc:
        raise SettingsError(f"RAGWATCH_RATE_LIMIT_OVERRIDES_FILE: cannot read {path!r} ({exc.strerror})") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SettingsError(
            f'RAGWATCH_RATE_LIMIT_OVERRIDES_FILE: expected {{"tenant": {{"per_minute": n, "per_hour": n}}}} ({exc})'
        ) from None


@dataclass(frozen=True)
class Window:
    name: str
    """``tenant-minute``, ``user-hour``…: the policy name in the ``RateLimit`` headers."""
    seconds: int
    limit: int
    key: str


@dataclass(frozen=True)
class Decision:
    allowed: bool
    outcome: Literal["allowed", "refused", "error"]
    windows: Sequence[Window]
    counts: Sequence[int]
    now: float
    read: Sequence[bytes | None] | None = None
    """The values of the keys the request asked to read in the same round trip; ``None`` if Redis was not read."""

    def headers(self) -> dict[str, str]:
        """IETF ``RateLimit-Policy`` (every window) and ``RateLimit`` (the closest to full), as in
        draft-ietf-httpapi-ratelimit-headers."""
        if not self.windows or not self.counts:
            return {}
        policies = ", ".join(f'"{w.name}";q={w.limit};w={w.seconds}' for w in self.windows)
        closest = min(range(len(self.windows)), key=lambda i: self.windows[i].limit - self.counts[i])
        window = self.windows[closest]
        remaining = max(window.limit - self.counts[closest], 0)
        reset = window.seconds - int(self.now) % window.seconds
        return {"RateLimit-Policy": policies, "RateLimit": f'"{window.name}";r={remaining};t={reset}'}


class RateLimiter:
    def __init__(
        self,
        counters: Counters,
        settings: RateLimitSettings,
        overrides: Mapping[str, Override],
        telemetry: Telemetry,
        health: RedisHealth,
    ) -> None:
        self._counters = counters
        self._health = health
        self._settings = settings
        self._overrides = overrides
        self._telemetry = telemetry

    def windows(self, tenant_id: str, user_id: str, action: Action, now: float) -> list[Window]:
        settings, override = self._settings, self._overrides.get(tenant_id, Override())
        limits = {
            ("tenant", "minute"): override.tenant_per_minute or settings.rate_limit_tenant_per_minute,
            ("tenant", "hour"): override.tenant_per_hour or settings.rate_limit_tenant_per_hour,
            ("user", "minute"): override.per_minute or settings.rate_limit_per_minute,
            ("user", "hour"): override.per_hour or settings.rate_limit_per_hour,
        }
        # User ids may hold any text ("auth0|…", e-mails): keys carry a digest. The tenant in braces is a
        # Redis Cluster hash tag, so all of a request's counters share one slot.
        who = {"tenant": "t", "user": "u:" + hashlib.sha256(user_id.encode()).hexdigest()[:16]}
        windows = []
        for (scope, period), limit in limits.items():
            seconds = _PERIOD_SECONDS[period]
            key = f"rw:rl:{{{tenant_id}}}:{action}:{who[scope]}:{seconds}:{int(now) // seconds}"
            windows.append(Window(name=f"{scope}-{period}", seconds=seconds, limit=limit, key=key))
        return windows

    async def check(self, tenant_id: str, user_id: str, action: Action, read: Sequence[str] = ()) -> Decision:
        """Count the request or refuse it with :class:`RateLimited` (429, ``Retry-After``); when the counters
        cannot be reached, let it through uncounted or refuse it with :class:`RateLimiterUnavailable` (503), as
        the failure mode says. Every decision, failures included, is counted in ``rag.ratelimit.decisions``.

        ``read``: keys whose values the request needs next (its cache lookup), read in the same round trip
        and returned in :attr:`Decision.read`."""
        now = time.time()
        windows = self.windows(tenant_id, user_id, action, now)
        failure: BaseException | None = None
        with stage(self._telemetry, "rate_limit", **{"rag.ratelimit.action": action}) as span:
            try:
                if not self._health.up:
                    raise RedisUnavailable
                reply, values = await self._counters.check_and_count(
                    [w.key for w in windows], [w.limit for w in windows], [w.seconds + 5 for w in windows], read
                )
            except RedisUnavailable as exc:
                self._health.skipped("ratelimit")
                failure, decision = exc, self._on_failure(windows, now)
            except (RedisError, OSError, TimeoutError) as exc:
                self._health.failed("ratelimit", exc)
                failure, decision = exc, self._on_failure(windows, now)
            else:
                self._health.succeeded()
                decision = _decision(reply, windows, now, values if read else None)
            span.set_attribute("rag.ratelimit.outcome", decision.outcome)
            self._telemetry.instruments.ratelimit_decisions.add(1, {"action": action, "outcome": decision.outcome})
            if failure is not None and not decision.allowed:
                # Failing closed: counted as an error above (the operator's signal), then refused with 503.
                raise RateLimiterUnavailable("The rate limiter cannot decide; try again shortly.") from failure
        if not decision.allowed:
            raise self._refusal(decision)
        return decision

    def _on_failure(self, windows: Sequence[Window], now: float) -> Decision:
        """Redis failed or is known to be down (its health logs that once): the failure mode decides."""
        allowed = self._settings.rate_limit_failure_mode == "open"
        return Decision(allowed=allowed, outcome="error", windows=windows, counts=[], now=now)

    def _refusal(self, decision: Decision) -> RateLimited:
        full = next(i for i, (w, c) in enumerate(zip(decision.windows, decision.counts, strict=True)) if c >= w.limit)
        window = decision.windows[full]
        retry_after = window.seconds - int(decision.now) % window.seconds
        headers = {**decision.headers(), "Retry-After": str(retry_after)}
        return RateLimited(
            f"The {window.name.replace('-', ' per ')} limit of {window.limit} is reached.", headers=headers
        )


def _decision(reply: list[int], windows: Sequence[Window], now: float, read: list[bytes | None] | None) -> Decision:
    if reply[0] == 1:
        return Decision(allowed=True, outcome="allowed", windows=windows, counts=reply[1:], now=now, read=read)
    full, count = reply[1] - 1, reply[2]
    counts = [count if index == full else 0 for index in range(len(windows))]
    return Decision(allowed=False, outcome="refused", windows=windows, counts=counts, now=now)
