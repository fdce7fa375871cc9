"""Logging: JSON lines (or readable text) on stdout, and OpenTelemetry log records over OTLP.

Every record carries the active ``trace_id`` and ``span_id`` and the request's context (tenant, user,
knowledge base, route…), so a log line leads to its trace and a trace to its log lines.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler

from telemetry.context import current_request
from telemetry.setup import Telemetry

__all__ = ["JsonFormatter", "RequestContextFilter", "TextFormatter", "configure_logging"]

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_encode = msgspec.json.Encoder(enc_hook=str).encode  # anything unusual in ``extra=`` is logged as text


class RequestContextFilter(logging.Filter):
    """Copies the trace ids and the request context onto each record (a filter, so every handler sees them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            record.trace_id = format(span_context.trace_id, "032x")
            record.span_id = format(span_context.span_id, "016x")
        request = current_request()
        if request is not None:
            record.route = request.route
            for name, value in request.fields.items():
                if not hasattr(record, name):
                    setattr(record, name, value)
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {name: value for name, value in vars(record).items() if name not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "severity": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _encode(line).decode()


class TextFormatter(logging.Formatter):
    """One readable line for local use: time, level, logger, message, then the context as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        time = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        extras = " ".join(f"{name}={value}" for name, value in _fields(record).items())
        text = f"{time} {record.levelname:<7} {record.name}: {record.getMessage()}" + (f"  {extras}" if extras else "")
        return text + ("\n" + self.formatException(record.exc_info) if record.exc_info else "")


def configure_logging(telemetry: Telemetry, level: str, log_format: Literal["json", "text"]) -> None:
    """Route the root logger to stdout (and to OTLP when the SDK exports logs); replaces earlier handlers."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if isinstance(handler, LoggingHandler):
            handler.flush()
    stdout = logging.StreamHandler(sys.stdout)
    stdout.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handlers: list[logging.Handler] = [stdout]
    if isinstance(telemetry.logger_provider, LoggerProvider):
        handlers.append(LoggingHandler(logger_provider=telemetry.logger_provider))
    context_filter = RequestContextFilter()
    for handler in handlers:
        handler.addFilter(context_filter)
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("uvicorn.access",):  # ragwatch writes its own access log, with the trace id
        logging.getLogger(noisy).disabled = True
