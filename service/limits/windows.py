"""Rate-limit windows and decisions: which counters a request touches, and what its response says about them.

Windows are fixed (aligned on the minute and the hour), so a refused request learns exactly when to retry.
Pure functions of their inputs: no I/O, no clock read here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["PERIOD_SECONDS", "Action", "Decision", "Scope", "Window", "decision_from_reply", "windows_for"]

Action = Literal["chat", "ingest", "search"]
Scope = Literal["tenant", "user"]
Period = Literal["minute", "hour"]
PERIOD_SECONDS: dict[Period, int] = {"minute": 60, "hour": 3600}


@dataclass(frozen=True)
class Window:
    name: str
    """``tenant-minute``, ``user-hour``…: the policy name in the ``RateLimit`` headers."""
    seconds: int
    limit: int
    key: str


def windows_for(
    limits: Mapping[tuple[Scope, Period], int], tenant_id: str, user_id: str, action: Action, now: float
) -> list[Window]:
    """The windows a request of ``user_id`` in ``tenant_id`` is counted in at ``now`` (Unix seconds).

    User ids may hold any text ("auth0|…", e-mails): keys carry a digest. The tenant in braces is a Redis
    Cluster hash tag, so all of a request's counters share one slot.
    """
    who = {"tenant": "t", "user": "u:" + hashlib.sha256(user_id.encode()).hexdigest()[:16]}
    windows = []
    for (scope, period), limit in limits.items():
        seconds = PERIOD_SECONDS[period]
        key = f"rw:rl:{{{tenant_id}}}:{action}:{who[scope]}:{seconds}:{int(now) // seconds}"
        windows.append(Window(name=f"{scope}-{period}", seconds=seconds, limit=limit, key=key))
    return windows


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

    def full_window(self) -> Window:
        """The window that refused the request."""
        return next(w for w, count in zip(self.windows, self.counts, strict=True) if count >= w.limit)

    def retry_after(self) -> int:
        """Seconds until the full window starts again."""
        window = self.full_window()
        return window.seconds - int(self.now) % window.seconds


def decision_from_reply(
    reply: Sequence[int], windows: Sequence[Window], now: float, read: Sequence[bytes | None] | None
) -> Decision:
    """The decision the counters' reply states: ``[1, counts...]`` counted, ``[0, i, count]`` window i full."""
    if reply[0] == 1:
        return Decision(allowed=True, outcome="allowed", windows=windows, counts=reply[1:], now=now, read=read)
    full, count = reply[1] - 1, reply[2]
    counts = [count if index == full else 0 for index in range(len(windows))]
    return Decision(allowed=False, outcome="refused", windows=windows, counts=counts, now=now)
