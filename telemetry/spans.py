"""Span helpers named and attributed by the OpenTelemetry semantic conventions (GenAI, database).

Each helper opens a child of the current span, records the outcome (``error.type`` and an error status
with the exception on failure) and guards attribute work with ``is_recording()`` so an unsampled or disabled
trace costs next to nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from telemetry.context import current_request
from telemetry.setup import Telemetry

__all__ = ["GenAICall", "db_query", "describe_stage", "genai_call", "record_error", "stage"]

DB_SYSTEM = "lancedb"


def _error_type(exc: BaseException) -> str:
    """Low-cardinality ``error.type``: an error's own ``error_type``, else the problem slug of our errors,
    ``cancelled`` for a client gone away."""
    if isinstance(exc, GeneratorExit | asyncio.CancelledError):
        return "cancelled"
    slug = getattr(exc, "error_type", None) or getattr(exc, "slug", None)
    return slug if isinstance(slug, str) else type(exc).__qualname__


def record_error(span: Span, exc: BaseException) -> None:
    span.set_attribute("error.type", _error_type(exc))
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))


@contextmanager
def stage(telemetry: Telemetry, name: str, **attributes: Any) -> Iterator[Span]:
    """An internal span for one pipeline stage (``ingest.parse``, ``rag.fusion``…)."""
    with telemetry.tracer.start_as_current_span(name, record_exception=False, set_status_on_exception=False) as span:
        if span.is_recording() and attributes:
            span.set_attributes(attributes)
        try:
            yield span
        except BaseException as exc:
            record_error(span, exc)
            raise


def describe_stage(**attributes: Any) -> None:
    """Add ``attributes`` to the current span (the stage a helper runs in), when it is recorded."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(attributes)


@contextmanager
def db_query(telemetry: Telemetry, operation: str, collection: str, *, top_k: int | None = None) -> Iterator[_DbResult]:
    """A LanceDB client span ``{operation} {collection}``, counted in ``rag_vector_db_queries_total``."""
    result = _DbResult()
    with telemetry.tracer.start_as_current_span(
        f"{operation} {collection}", kind=SpanKind.CLIENT, record_exception=False, set_status_on_exception=False
    ) as span:
        if span.is_recording():
            span.set_attributes(
                {"db.system.name": DB_SYSTEM, "db.operation.name": operation, "db.collection.name": collection}
            )
            if top_k is not None:
                span.set_attribute("rag.top_k", top_k)
        status = "ok"
        try:
            yield result
        except BaseException as exc:
            status = "error"
            record_error(span, exc)
            raise
        finally:
            if result.rows is not None and span.is_recording():
                span.set_attribute("db.response.returned_rows", result.rows)
            telemetry.instruments.vector_db_queries.add(1, {"operation": operation, "status": status})


@dataclass
class _DbResult:
    rows: int | None = None


class GenAICall:
    """A GenAI client span ``{operation} {model}`` (``chat gpt-4o-mini``, ``embeddings hashing-384``).

    The caller fills in the response fields while it runs; :meth:`end` records them on the span and in
    ``gen_ai.client.operation.duration``, ``gen_ai.client.token.usage``, ``rag_llm_calls_total``, cost, and
    time to first token (the first streamed delta, or a whole answer's arrival). Prompt and answer text are
    kept only with ``RAGWATCH_CAPTURE_CONTENT=true``.

    The span is not made current for its whole life, because a streamed answer is consumed across the
    steps of an async generator, where a context attached in one step cannot be detached in another; wrap
    the awaits that should be its children (the HTTP call) in :meth:`active`.
    """

    def __init__(
        self,
        telemetry: Telemetry,
        operation: str,
        provider: str,
        model: str,
        *,
        tenant_id: str,
        remote: bool,
        input_text: str | None = None,
        request: Mapping[str, Any] | None = None,
    ) -> None:
        """``request``: span-only attributes of the call (``gen_ai.request.max_tokens``…), never metric labels;
        the request's conversation (``gen_ai.conversation.id``) is added to them."""
        self._telemetry = telemetry
        self._tenant_id = tenant_id
        self._input_text = input_text
        self._attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
        }
        span_attributes = {**self._attributes, **(request or {})}
        context = current_request()
        if context is not None and "conversation_id" in context.fields:
            span_attributes["gen_ai.conversation.id"] = context.fields["conversation_id"]
        self.span = telemetry.tracer.start_span(
            f"{operation} {model}", kind=SpanKind.CLIENT if remote else SpanKind.INTERNAL, attributes=span_attributes
        )
        self.started_at = time.perf_counter()
        self.response_model: str | None = None
        self.response_id: str | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.finish_reasons: Sequence[str] = ()
        self.cost_usd = 0.0
        self.output_text: str | None = None
        self.first_token_at: float | None = None
        self.error_type: str | None = None

    @contextmanager
    def active(self) -> Iterator[None]:
        with trace.use_span(self.span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            yield

    def __enter__(self) -> GenAICall:
        """Around one whole call: the span is current, fails with the call's exception, and ends with it."""
        self._active = self.active()
        self._active.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._active.__exit__(kind, exc, traceback)
        if exc is not None:
            self.fail(exc)
        self.end()

    def first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def fail(self, exc: BaseException) -> None:
        record_error(self.span, exc)
        self.error_type = _error_type(exc)

    def end(self) -> None:
        attributes = dict(self._attributes)
        if self.response_model:
            attributes["gen_ai.response.model"] = self.response_model
        if self.error_type:
            attributes["error.type"] = self.error_type
        if self.span.is_recording():
            _annotate_genai_span(self.span, self, attributes)
            if self._telemetry.capture_content:
                _capture_content(self.span, self._input_text, self.output_text)
        _record_genai_metrics(self._telemetry, self, attributes, tenant_id=self._tenant_id)
        self.span.end()


@contextmanager
def genai_call(
    telemetry: Telemetry,
    operation: str,
    provider: str,
    model: str,
    *,
    tenant_id: str,
    remote: bool,
    input_text: str | None = None,
    request: Mapping[str, Any] | None = None,
) -> Iterator[GenAICall]:
    """A :class:`GenAICall` that is current, and ended, around one block."""
    with GenAICall(
        telemetry,
        operation,
        provider,
        model,
        tenant_id=tenant_id,
        remote=remote,
        input_text=input_text,
        request=request,
    ) as call:
        yield call


def _annotate_genai_span(span: Span, call: GenAICall, attributes: dict[str, Any]) -> None:
    span.set_attributes(attributes)
    if call.input_tokens is not None:
        span.set_attribute("gen_ai.usage.input_tokens", call.input_tokens)
    if call.output_tokens is not None:
        span.set_attribute("gen_ai.usage.output_tokens", call.output_tokens)
    if call.finish_reasons:
        span.set_attribute("gen_ai.response.finish_reasons", list(call.finish_reasons))
    if call.response_id:
        span.set_attribute("gen_ai.response.id", call.response_id)


def _capture_content(span: Span, input_text: str | None, output_text: str | None) -> None:
    """Only with ``RAGWATCH_CAPTURE_CONTENT=true``: questions and answers may hold personal data."""
    if input_text is not None:
        span.set_attribute("gen_ai.input.messages", json.dumps([{"role": "user", "content": input_text}]))
    if output_text is not None:
        span.set_attribute("gen_ai.output.messages", json.dumps([{"role": "assistant", "content": output_text}]))


def _record_genai_metrics(telemetry: Telemetry, call: GenAICall, attributes: dict[str, Any], *, tenant_id: str) -> None:
    instruments = telemetry.instruments
    instruments.operation_duration.record(time.perf_counter() - call.started_at, attributes)
    tenant = instruments.tenant_label(tenant_id)
    for token_type, tokens in (("input", call.input_tokens), ("output", call.output_tokens)):
        if tokens:
            instruments.token_usage.record(tokens, {**attributes, "gen_ai.token.type": token_type})
            instruments.tenant_tokens.add(tokens, {"tenant": tenant, "gen_ai.token.type": token_type})
    provider, model = attributes["gen_ai.provider.name"], attributes["gen_ai.request.model"]
    if attributes["gen_ai.operation.name"] == "chat":
        instruments.llm_calls.add(1, {"provider": provider, "model": model, "status": call.error_type or "ok"})
    # A free model's cost is an explicit 0, so spend panels show 0 rather than "No data".
    instruments.llm_cost.add(call.cost_usd, {"provider": provider, "model": model})
    instruments.tenant_cost.add(call.cost_usd, {"tenant": tenant})
    if call.first_token_at is not None:
        first_token_s = call.first_token_at - call.started_at
        instruments.time_to_first_token.record(
            first_token_s, {"gen_ai.provider.name": provider, "gen_ai.request.model": model}
        )
