"""Logging: JSON lines (or readable text) on stdout, and OpenTelemetry log records over OTLP.

Every record carries the active ``trace_id`` and ``span_id`` and the request's context (tenant, user,
knowledge base, route…), so a log line leads to its trace and a trace to its log lines.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from opentelemetry import context, trace
from opentelemetry._logs import Logger, LogRecord, SeverityNumber
from opentelemetry._logs import LoggerProvider as ApiLoggerProvider
from opentelemetry.sdk._logs import LoggerProvider

from telemetry.context import current_request
from telemetry.setup import Telemetry

__all__ = [
    "ACCESS_LOGGER",
    "EVENT_NAME",
    "AccessLogPath",
    "JsonFormatter",
    "OpenTelemetryHandler",
    "RequestContextFilter",
    "TextFormatter",
    "configure_logging",
]

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
ACCESS_LOGGER = "ragwatch.access"
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


# Python levels to OpenTelemetry severities (the log data model's table), and the severity texts it displays.
_SEVERITIES = (
    (logging.CRITICAL, SeverityNumber.FATAL, "FATAL"),
    (logging.ERROR, SeverityNumber.ERROR, "ERROR"),
    (logging.WARNING, SeverityNumber.WARN, "WARN"),
    (logging.INFO, SeverityNumber.INFO, "INFO"),
    (logging.DEBUG, SeverityNumber.DEBUG, "DEBUG"),
)
_SCALARS = (str, bool, int, float)
EVENT_NAME = "event.name"
"""The field (``extra=``) that makes a record an event of that name."""


def _severity(record: logging.LogRecord) -> tuple[SeverityNumber, str]:
    for level, number, text in _SEVERITIES:
        if record.levelno >= level:
            return number, text
    return SeverityNumber.TRACE, "TRACE"


def _attribute(value: Any) -> Any:
    """An OpenTelemetry attribute value: scalars and lists of one scalar type as they are, anything else as text."""
    if isinstance(value, _SCALARS):
        return value
    homogeneous = isinstance(value, list | tuple) and value and all(type(item) is type(value[0]) for item in value)
    return list(value) if homogeneous and isinstance(value[0], _SCALARS) else str(value)


class OpenTelemetryHandler(logging.Handler):
    """Emits each record as an OpenTelemetry log record, in the active trace context (exported over OTLP).

    The body is the message; the attributes are the record's fields (``extra=`` and the request context),
    where it was logged (``code.*``) and, with ``exc_info``, the ``exception.*`` attributes. A record logged
    with an ``event.name`` field is an event: the name goes in its EventName field, as the semantic conventions
    now want it (the ``event.name`` attribute is deprecated); on stdout it stays a field. Records of the
    OpenTelemetry SDK itself (an exporter that fails) stay on stdout: exporting them through the pipeline that
    fails would feed the failure back into itself. (The SDK's own ``LoggingHandler`` is deprecated.)
    """

    def __init__(self, logger_provider: ApiLoggerProvider) -> None:
        super().__init__()
        self._provider = logger_provider

    def _logger(self, name: str) -> Logger:
        return self._provider.get_logger(name)  # the SDK caches one per name

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "opentelemetry" or record.name.startswith("opentelemetry."):
            return
        try:
            attributes = {name: _attribute(value) for name, value in _fields(record).items()}
            event_name = attributes.pop(EVENT_NAME, None)
            attributes["code.file.path"] = record.pathname
            attributes["code.function.name"] = record.funcName
            attributes["code.line.number"] = record.lineno
            if record.exc_info and record.exc_info[0] is not None:
                kind, error, _ = record.exc_info
                module = "" if kind.__module__ == "builtins" else f"{kind.__module__}."
                attributes["exception.type"] = module + kind.__qualname__  # as span exception events name it
                attributes["exception.message"] = str(error)
                attributes["exception.stacktrace"] = "".join(traceback.format_exception(*record.exc_info))
            number, text = _severity(record)
            self._logger(record.name).emit(
                LogRecord(
                    timestamp=int(record.created * 1e9),
                    observed_timestamp=time.time_ns(),
                    context=context.get_current(),
                    severity_number=number,
                    severity_text=text,
                    body=record.getMessage(),
                    attributes=attributes,
                    event_name=event_name if isinstance(event_name, str) else None,
                )
            )
        except Exception:
            self.handleError(record)


AccessLogPath = Literal["auto", "stdout", "otlp", "off"]


def configure_logging(
    telemetry: Telemetry, level: str, log_format: Literal["json", "text"], access_log: AccessLogPath = "auto"
) -> None:
    """Route the root logger to stdout (and to OTLP when the SDK exports logs); replaces earlier handlers.

    The access log (``ragwatch.access``, one record per request) takes one path, never two: over OTLP when
    logs are exported (``auto``, the default), else as lines on stdout; ``stdout``, ``otlp`` or ``off`` choose.
    Writing it both ways paid for every request twice and, with a collector also tailing stdout, stored it twice.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    stdout = logging.StreamHandler(sys.stdout)
    stdout.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handlers: list[logging.Handler] = [stdout]
    otlp: logging.Handler | None = None
    if isinstance(telemetry.logger_provider, LoggerProvider):
        otlp = OpenTelemetryHandler(telemetry.logger_provider)
        handlers.append(otlp)
    context_filter = RequestContextFilter()
    for handler in handlers:
        handler.addFilter(context_filter)
        root.addHandler(handler)
    root.setLevel(level)
    access = logging.getLogger(ACCESS_LOGGER)
    for handler in list(access.handlers):
        access.removeHandler(handler)
    access.propagate = False
    exported = otlp is not None and "logs" in telemetry.otlp_signals
    path = ("otlp" if exported else "stdout") if access_log == "auto" else access_log
    access.disabled = path == "off" or (path == "otlp" and otlp is None)
    access.addHandler(otlp if path == "otlp" and otlp is not None else stdout)
    for noisy in ("uvicorn.access",):  # ragwatch writes its own access log, with the trace id
        logging.getLogger(noisy).disabled = True
