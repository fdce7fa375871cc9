"""The audit trail: one ``ragwatch.audit`` log record for every attempt at an admin action, whatever came of it.

An admin route names its action in its ``opt`` (``opt={**ADMINS_ONLY, **audited("knowledge_base.delete",
target="kb_id")}``); :class:`AuditTrail`, middleware of the app, writes the record as the route's response goes
out, before its last byte (before its headers when it has no body), so a client that was answered was audited.
The outcome is the response's: ``success``, ``denied`` (401, 403: a member trying an admin action is recorded
too) or ``failure`` (any other error, a shed request's 503 included), with the problem's slug as ``error.type``.

A record names who (``rag.tenant.id``, ``enduser.id``, ``user.roles``, ``client.address``), what
(``rag.audit.action``, ``rag.audit.target.id``, ``rag.kb.id``), how it ended (``rag.audit.outcome``,
``error.type``, ``http.response.status_code``) and, from the logging set-up, its request's ``trace_id``. Only
ids from the path and the response are read: never a document's content, a question or a token. Records are
written at INFO whatever ``RAGWATCH_LOG_LEVEL`` says, to stdout and over OTLP like every log record, and over
OTLP they are never dropped with their trace (:data:`telemetry.sampling.AUDIT_EVENT`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from litestar.enums import ScopeType
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send

from service.auth import Principal
from service.errors import PROBLEM_BASE
from service.models import ID_PATTERN
from telemetry.logs import EVENT_NAME
from telemetry.sampling import AUDIT_EVENT

__all__ = ["AUDIT", "Audit", "AuditTrail", "AuditedAction", "Outcome", "audited"]

AUDIT = "ragwatch.audit"
"""The route ``opt`` key holding the :class:`AuditedAction` a request of the route attempts."""
Outcome = Literal["success", "denied", "failure"]
_DENIED = frozenset({401, 403})
_BODILESS = frozenset({204, 304})
_BODY_READ = 64 * 1024
"""Of a response body, at most this much is kept to read the target id or the problem type from."""
_ID = re.compile(ID_PATTERN)
_SHOWN = 64


@dataclass(frozen=True)
class AuditedAction:
    name: str
    """A stable dotted name: ``knowledge_base.create``, ``document.delete``…"""
    target: str
    """Where the target's id is: the path parameter of that name, else that field of the success response."""
    replacing: str | None = None
    """The action's name when the success response says ``"replaced": true`` (an ingest that replaced)."""


def audited(name: str, *, target: str, replacing: str | None = None) -> dict[str, AuditedAction]:
    """The route ``opt`` of an admin route whose every request is one audit record of the action ``name``."""
    return {AUDIT: AuditedAction(name, target, replacing)}


class Audit:
    """Writes audit records, through the ``ragwatch.audit`` logger (INFO, whatever the root level)."""

    def __init__(self) -> None:
        self._logger = logging.getLogger(AUDIT_EVENT)
        self._logger.setLevel(logging.INFO)

    def record(
        self,
        action: str,
        outcome: Outcome,
        *,
        principal: Principal | None,
        target_id: str | None,
        error_type: str | None,
        request: dict[str, Any],
    ) -> None:
        """One record of ``action``; ``request`` adds the request's own attributes (method, route, status…)."""
        attributes: dict[str, Any] = {EVENT_NAME: AUDIT_EVENT, "rag.audit.action": action, "rag.audit.outcome": outcome}
        if target_id is not None:
            attributes["rag.audit.target.id"] = target_id
        if error_type is not None:
            attributes["error.type"] = error_type
        if principal is not None:
            attributes["rag.tenant.id"] = principal.tenant_id
            attributes["enduser.id"] = principal.user_id
            if principal.roles:
                attributes["user.roles"] = sorted(principal.roles)
        attributes.update(request)
        self._logger.info("%s %s", action, outcome, extra=attributes)


class AuditTrail:
    """Writes one audit record for each request of a route marked with :func:`audited`; others pass untouched."""

    def __init__(self, app: ASGIApp, audit: Audit) -> None:
        self.app = app
        self._audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler: BaseRouteHandler | None = scope.get("route_handler")
        action = handler.opt.get(AUDIT) if handler is not None else None
        if scope["type"] != ScopeType.HTTP or not isinstance(action, AuditedAction):
            await self.app(scope, receive, send)
            return
        attempt = _Attempt(self._audit, action, scope)

        async def send_audited(message: Message) -> None:
            attempt.saw(message)
            await send(message)

        try:
            await self.app(scope, receive, send_audited)
        except BaseException as exc:
            attempt.ended("cancelled" if isinstance(exc, asyncio.CancelledError) else "internal-error")
            raise
        attempt.ended("no-response")


class _Attempt:
    """One request of an audited route, as its response goes out."""

    def __init__(self, audit: Audit, action: AuditedAction, scope: HTTPScope) -> None:
        self._audit = audit
        self._action = action
        self._scope = scope
        self._status = 0
        self._replayed = False
        self._body = bytearray()
        self._written = False

    def saw(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._status = message["status"]
            self._replayed = any(
                name.lower() == b"idempotent-replayed" and value == b"true" for name, value in message["headers"]
            )
            if self._status in _BODILESS:  # the client has it all with the headers
                self._write({}, None)
        elif message["type"] == "http.response.body":
            if len(self._body) < _BODY_READ:
                self._body += message.get("body", b"")
            if not message.get("more_body", False) and not self._written:
                self._write(_json(bytes(self._body)), None)

    def ended(self, error_type: str) -> None:
        """The request is over: if no response was sent whole, it failed with ``error_type``."""
        if not self._written:
            self._write({}, error_type)

    def _write(self, body: dict[str, Any], error_type: str | None) -> None:
        self._written = True
        action, status, scope = self._action, self._status, self._scope
        params: dict[str, Any] = scope.get("path_params") or {}
        succeeded = error_type is None and 200 <= status < 400
        outcome: Outcome = "success" if succeeded else "denied" if status in _DENIED else "failure"
        if not succeeded and error_type is None:
            error_type = _problem_slug(body, status)
        target = params.get(action.target, body.get(action.target) if succeeded else None)
        name = action.replacing if action.replacing and succeeded and body.get("replaced") is True else action.name
        request: dict[str, Any] = {"http.request.method": scope["method"], "http.route": scope.get("path_template")}
        if status:
            request["http.response.status_code"] = status
        if (kb_id := _shown(params.get("kb_id"))) is not None:
            request["rag.kb.id"] = kb_id
        if self._replayed:
            request["rag.audit.replayed"] = True
        client = scope.get("client")
        if client:
            request["client.address"] = client[0]
        user = scope.get("user")
        self._audit.record(
            name,
            outcome,
            principal=user if isinstance(user, Principal) else None,
            target_id=_shown(target),
            error_type=error_type,
            request=request,
        )


def _problem_slug(body: dict[str, Any], status: int) -> str:
    """The slug of the problem a response body is (``not-found``), else the status as text."""
    problem_type = body.get("type")
    if isinstance(problem_type, str) and problem_type.startswith(PROBLEM_BASE):
        return problem_type.removeprefix(PROBLEM_BASE)
    return str(status)


def _shown(value: object) -> str | None:
    """An id as recorded: in the id format as it is; any other text escaped and cut, so that a crafted id shows
    what was attempted but can neither forge a log line nor flood the trail."""
    if not isinstance(value, str):
        return None
    if _ID.fullmatch(value):
        return value
    escaped = value.encode("unicode_escape").decode("ascii")
    return escaped if len(escaped) <= _SHOWN else escaped[:_SHOWN] + "..."


def _json(body: bytes) -> dict[str, Any]:
    """A JSON object response body (a created resource, a problem), else nothing."""
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return {}
    return decoded if isinstance(decoded, dict) else {}
