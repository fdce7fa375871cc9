"""Load shedding: at most ``RAGWATCH_MAX_CONCURRENT_REQUESTS`` chat, search and ingestion requests in flight per
process; one more is refused at once with a 503 ``overloaded`` problem and ``Retry-After``, never queued.

A route takes part by its ``opt`` (``opt=admitted_as("chat")``); :class:`AdmissionMiddleware` holds a slot of the
process's :class:`Admission` from before the route's guards (authentication, rate limits) until the response is
sent, so a streamed answer keeps its slot until its last event, and any end of a request (an error, a client
that hangs up, a cancelled task) gives the slot back. Every other route (health, metrics, listing) passes
through untouched, so it is never shed.
"""

from __future__ import annotations

from typing import Any, Literal

from litestar import Request
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp, Receive, Scope, Send

from service.errors import Overloaded
from telemetry import Telemetry

__all__ = ["ACTIONS", "ADMISSION", "Action", "Admission", "AdmissionMiddleware", "admitted_as"]

Action = Literal["chat", "ingest", "search"]
ACTIONS: tuple[Action, ...] = ("chat", "ingest", "search")
ADMISSION = "ragwatch.admission"
"""The route ``opt`` key naming the action a request of the route counts as."""
RETRY_AFTER_S = 1
"""A slot is usually free again within a second: an answer or an ingestion takes that long, not minutes."""


def admitted_as(action: Action) -> dict[str, str]:
    """The route ``opt`` of a route whose requests count against the capacity as ``action``."""
    return {ADMISSION: action}


class Admission:
    """The slots of one process: a plain counter, changed only on the event loop (no lock, no await)."""

    def __init__(self, capacity: int, telemetry: Telemetry) -> None:
        self.capacity = capacity
        self.in_flight = 0
        self._by_action: dict[str, int] = dict.fromkeys(ACTIONS, 0)
        self._labels = {action: {"action": action} for action in ACTIONS}
        instruments = telemetry.instruments
        self._shed = instruments.requests_shed
        for labels in self._labels.values():  # every series from the first scrape
            self._shed.add(0, labels)
        instruments.requests_in_flight.watch(self._by_action, capacity)

    def enter(self, action: Action) -> bool:
        """Take a slot for a request of ``action``; ``False`` (and the request counted as shed) when none is free."""
        if self.in_flight >= self.capacity:
            self._shed.add(1, self._labels[action])
            return False
        self.in_flight += 1
        self._by_action[action] += 1
        return True

    def leave(self, action: Action) -> None:
        """Give back the slot a request of ``action`` took."""
        self.in_flight -= 1
        self._by_action[action] -= 1

    def refusal(self) -> Overloaded:
        return Overloaded(
            f"This server already serves {self.capacity} chat, search and ingestion requests at once; "
            f"try again in {RETRY_AFTER_S} s.",
            retry_after_s=RETRY_AFTER_S,
        )


class AdmissionMiddleware:
    """Holds an :class:`Admission` slot around each request of a route marked with :func:`admitted_as`."""

    def __init__(self, app: ASGIApp, admission: Admission) -> None:
        self.app = app
        self._admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler: BaseRouteHandler | None = scope.get("route_handler")
        action: Action | None
        if handler is None or (action := handler.opt.get(ADMISSION)) is None:
            await self.app(scope, receive, send)
            return
        admission = self._admission
        if not admission.enter(action):
            await _refuse(handler, admission.refusal(), scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            admission.leave(action)


async def _refuse(handler: BaseRouteHandler, error: Overloaded, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer ``error`` as the route answers its errors (a problem, or OpenAI's shape on its routes), here rather
    than by raising: an error raised out of the middleware would pass the server span and the request metrics
    as an exception, to be answered by the app's own handler outside them."""
    handlers = handler.resolve_exception_handlers()
    render = next(handlers[kind] for kind in type(error).__mro__ if kind in handlers)
    request: Request[Any, Any, Any] = Request(scope, receive, send)
    response = render(request, error)
    await response.to_asgi_response(app=None, request=request)(scope, receive, send)
