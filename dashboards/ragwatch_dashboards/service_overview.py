"""ragwatch / Service overview: rate, errors and duration by route; readiness of the dependencies; saturation and
load shedding; error logs and failed traces."""

from __future__ import annotations

from grafana_foundation_sdk.builders import timeseries
from grafana_foundation_sdk.models import dashboard as dm

from .frame import dashboard
from .links import ALL_TRACES, EXEMPLARS, FAILED_REQUESTS, ROUTE_TRACES, SLOW_REQUESTS
from .objectives import AVAILABILITY_BUDGET, REQUEST_LATENCY
from .panels import (
    logs_panel,
    neutral,
    rows,
    stat_panel,
    state_timeline_panel,
    thresholds,
    timeseries_panel,
    trace_table_panel,
    value_texts,
)
from .queries import RATE, failures, logs, prom, quantiles, ratio, series, traceql, traces

FILE = "service-overview.json"

ERROR_RATIO = thresholds("green", (AVAILABILITY_BUDGET, "yellow"), (0.05, "red"))
UP = thresholds("red", (1.0, "green"))
UP_DOWN = value_texts(**{"0": ("down", "red"), "1": ("up", "green")})
IN_FLIGHT = thresholds("green", (50.0, "yellow"), (200.0, "red"))
SHED = thresholds("green", (0.05, "red"))  # the RequestsShed alert's rate
SLOTS_USED = thresholds("green", (0.75, "yellow"), (1.0, "red"))
ROUTE = "method, endpoint"


def _latency(q: float) -> timeseries.Panel:
    name = f"p{round(q * 100)}"
    return timeseries_panel(
        f"Request duration {name} by route",
        f"{name} of the time to answer a request, by route template (rag_request_duration_seconds). Click a"
        f" line for that route's traces. {EXEMPLARS}",
        quantiles(series("rag_request_duration_seconds_bucket"), ROUTE, "{{method}} {{endpoint}}", [q]),
        unit="s",
        steps=REQUEST_LATENCY,
        size=(8, 9),
        links=[SLOW_REQUESTS, ALL_TRACES],
        data_links=[ROUTE_TRACES],
    )


def _queue_fill(signal: str) -> str:
    size = series(f"otel_sdk_processor_{signal}_queue_size")
    capacity = series(f"otel_sdk_processor_{signal}_queue_capacity")
    by = "instance, otel_component_name"
    return f"max by ({by}) ({size}) / max by ({by}) ({capacity})"


def build() -> dm.Dashboard:
    requests = series("rag_requests_total")
    errors = series("rag_requests_total", 'status=~"5.."')
    refused = series("rag_requests_total", 'status=~"4.."')
    in_flight = series("http_server_active_requests")
    admitted, capacity = series("rag_requests_in_flight"), series("rag_requests_capacity")
    up = series("rag_dependency_up")
    unrouted = series("http_server_request_duration_seconds_count", 'http_route=""')
    queue_full = 'error_type="queue_full"'
    spans, log_records = "otel_sdk_processor_span_processed_total", "otel_sdk_processor_log_processed_total"

    panels = rows(
        [
            stat_panel(
                "Request rate",
                "Requests answered per second, all routes together (rag_requests_total).",
                [prom(f"sum(rate({requests}[{RATE}]))", "requests/s")],
                unit="reqps",
                steps=neutral(),
            ),
            stat_panel(
                "5xx ratio",
                "Share of requests answered with a 5xx status, all routes; the availability SLO allows 0.5 % on /v1.",
                [prom(ratio(errors, requests), "5xx")],
                unit="percentunit",
                steps=ERROR_RATIO,
                decimals=2,
                links=[FAILED_REQUESTS],
            ),
            stat_panel(
                "4xx ratio",
                "Share of requests refused with a 4xx status: invalid input, authentication, rate limits (429).",
                [prom(ratio(refused, requests), "4xx")],
                unit="percentunit",
                steps=thresholds("green", (0.05, "yellow"), (0.25, "red")),
                decimals=1,
            ),
            stat_panel(
                "In-flight requests",
                "Requests being served right now, over the selected instances (http_server_active_requests).",
                [prom(f"sum({in_flight})", "in flight")],
                unit="short",
                steps=IN_FLIGHT,
            ),
            stat_panel(
                "Readiness",
                "Whether each dependency answered its last check (rag_dependency_up), on the worst selected"
                " instance: lancedb and llm are the checks of /health/ready; redis shows only when Redis is used.",
                [prom(f"min by (dependency) ({up})", "{{dependency}}")],
                unit="none",
                steps=UP,
                mappings=UP_DOWN,
                size=(8, 5),
            ),
        ],
        [
            timeseries_panel(
                "Request rate by route",
                "Requests per second by method and route template. Click a line for that route's traces.",
                [prom(f"sum by ({ROUTE}) (rate({requests}[{RATE}]))", "{{method}} {{endpoint}}")],
                unit="reqps",
                data_links=[ROUTE_TRACES],
            ),
            timeseries_panel(
                "Responses by status code",
                "Requests per second by the status code of the answer.",
                [prom(f"sum by (status) (rate({requests}[{RATE}]))", "{{status}}")],
                unit="reqps",
            ),
        ],
        [
            timeseries_panel(
                "5xx ratio by route",
                "Share of each route's requests answered with a 5xx; dashed lines at the 0.5 % SLO and at 5 %.",
                [prom(ratio(errors, requests, ROUTE), "{{method}} {{endpoint}}")],
                unit="percentunit",
                steps=ERROR_RATIO,
                show_thresholds=True,
                links=[FAILED_REQUESTS],
                data_links=[ROUTE_TRACES],
            ),
            timeseries_panel(
                "Requests that matched no route",
                "404 and 405 answers to paths that match no route (scanners, typos). Only the http_server_*"
                " metrics count them, without an http_route.",
                [
                    prom(
                        f"sum by (http_response_status_code) (rate({unrouted}[{RATE}]))",
                        "{{http_response_status_code}}",
                    )
                ],
                unit="reqps",
            ),
        ],
        [_latency(0.5), _latency(0.95), _latency(0.99)],
        [
            state_timeline_panel(
                "Dependency readiness over time",
                "rag_dependency_up of each dependency on the worst selected instance: green while it answers.",
                [prom(f"min by (dependency) ({up})", "{{dependency}}")],
                unit="none",
                steps=UP,
                mappings=UP_DOWN,
            ),
            timeseries_panel(
                "In-flight requests by instance",
                "Saturation: requests each instance serves at once (http_server_active_requests).",
                [prom(f"sum by (instance) ({in_flight})", "{{instance}}")],
                unit="short",
                steps=IN_FLIGHT,
                size=(8, 8),
            ),
            timeseries_panel(
                "Redis failures by use",
                "Redis commands that failed, or were skipped while Redis was down (rag_redis_errors_total), by"
                " what needed them: cache, ratelimit, active_tenants.",
                [prom(f"sum by (operation) (rate({series('rag_redis_errors_total')}[{RATE}]))", "{{operation}}")],
                unit="ops",
                steps=thresholds("green", (0.1, "red")),
                size=(8, 8),
            ),
        ],
        [
            timeseries_panel(
                "Requests shed by action",
                "Load shedding: chat, search and ingestion requests refused at once with 503 overloaded because"
                " the process already served RAGWATCH_MAX_CONCURRENT_REQUESTS of them (rag_requests_shed_total)."
                " The dashed line is the RequestsShed alert's rate.",
                [prom(f"sum by (action) (rate({series('rag_requests_shed_total')}[{RATE}]))", "{{action}}")],
                unit="reqps",
                steps=SHED,
                show_thresholds=True,
                size=(8, 8),
            ),
            timeseries_panel(
                "Admission slots in use by instance",
                "Saturation as load shedding sees it: the chat, search and ingestion requests each instance"
                " serves (rag_requests_in_flight) over how many it admits at once (rag_requests_capacity). At"
                " 100 % the next one is shed.",
                [prom(f"sum by (instance) ({admitted}) / sum by (instance) ({capacity})", "{{instance}}")],
                unit="percentunit",
                steps=SLOTS_USED,
                show_thresholds=True,
                max_value=1.0,
                size=(8, 8),
            ),
            timeseries_panel(
                "Admitted requests in flight by action",
                "Chat, search and ingestion requests being served now, over the selected instances"
                " (rag_requests_in_flight): a streamed answer counts until its last event.",
                [prom(f"sum by (action) ({admitted})", "{{action}}")],
                unit="short",
                size=(8, 8),
            ),
        ],
        [
            timeseries_panel(
                "Telemetry export queues",
                "How full the OpenTelemetry SDK's span and log queues are (size over capacity). A full queue"
                " drops what arrives next.",
                [prom(_queue_fill("span"), "spans {{instance}}"), prom(_queue_fill("log"), "logs {{instance}}")],
                unit="percentunit",
                steps=thresholds("green", (0.5, "yellow"), (0.8, "red")),
                show_thresholds=True,
                max_value=1.0,
            ),
            timeseries_panel(
                "Telemetry lost",
                "Spans and log records dropped because the SDK queue was full, and items the OTLP exporters could"
                " not deliver, by signal (rag_telemetry_export_failures_total). Above zero, traces, logs or"
                " metrics have gaps.",
                [
                    prom(failures(series(spans, queue_full), series(spans)), "spans dropped (queue full)"),
                    prom(
                        failures(series(log_records, queue_full), series(log_records)),
                        "log records dropped (queue full)",
                    ),
                    prom(
                        f"sum by (signal) (rate({series('rag_telemetry_export_failures_total')}[{RATE}]))",
                        "export failures: {{signal}}",
                    ),
                ],
                unit="cps",
                steps=thresholds("green", (0.01, "red")),
            ),
        ],
        [
            logs_panel(
                "Recent error logs",
                "ERROR and FATAL records from Loki. Logs arrive over OTLP: the log line is the message, while the"
                " severity, trace_id and request context are structured metadata, so the query filters on"
                " severity_text rather than on parsed JSON. Expand a line for its fields: the Loki datasource's"
                " derived field turns trace_id into a link to the trace in Tempo.",
                [
                    logs(
                        '{service_name="ragwatch"} | severity_text=~"ERROR|FATAL"'
                        ' | deployment_environment_name=~"$environment"'
                    )
                ],
                links=[FAILED_REQUESTS],
            )
        ],
        [
            trace_table_panel(
                "Recent failed traces",
                "The latest ragwatch traces with a span in error, from Tempo; click a trace id to open it.",
                [traces(traceql("status=error"))],
            )
        ],
    )
    return dashboard(
        "ragwatch-service-overview",
        "ragwatch / Service overview",
        "Rate, errors and duration by route; readiness of the dependencies; saturation; error logs and traces.",
        panels,
    )
