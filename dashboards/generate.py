"""Writes ragwatch's Grafana dashboards (``dashboards/*.json``) from plain dicts.

Run ``python dashboards/generate.py`` after editing this file and commit the JSON it writes;
``python dashboards/generate.py --check`` only reports whether the committed files are current (a test
checks the same). Metric names come from ``docs/metrics.md``; only the standard library is needed.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

Json = dict[str, Any]

HERE = Path(__file__).resolve().parent
SCHEMA_VERSION = 39
TAGS = ["ragwatch"]

# Datasource uids, as the observability stack provisions them.
PROMETHEUS_UID, TEMPO_UID, LOKI_UID = "prometheus", "tempo", "loki"
PROMETHEUS = {"type": "prometheus", "uid": "${datasource}"}
TEMPO = {"type": "tempo", "uid": TEMPO_UID}
LOKI = {"type": "loki", "uid": LOKI_UID}

# Matchers of every service series. The "All" value is `.*`, which also matches series without the label.
SCOPE = ['job="ragwatch"', 'deployment_environment_name=~"$environment"', 'instance=~"$instance"']
TENANT = 'tenant=~"$tenant"'
RATE = "$__rate_interval"

# The SLOs the recording rules and alerts in alerts/ implement.
AVAILABILITY_BUDGET = 0.005  # 99.5 % of requests answered without a 5xx
LATENCY_BUDGET = 0.01  # 99 % of /v1/chat requests answered within 5.12 s
SLO_WINDOWS = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]
# Burn rates at which the multiwindow alerts fire: 14.4 (1h and 5m), 6 (6h and 30m), 3 (1d and 2h), 1 (3d and 6h).
BURN_RATE_STEPS = [(1.0, "yellow"), (3.0, "orange"), (6.0, "red"), (14.4, "dark-red")]


def series(name: str, *matchers: str) -> str:
    """A selector of a ragwatch series: ``name{job=..., environment, instance, *matchers}``."""
    return name + "{" + ", ".join([*SCOPE, *matchers]) + "}"


def ratio(part: str, whole: str, by: str = "") -> str:
    """``part`` over ``whole``, both as per-second rates summed ``by`` some labels; 0 (not "No data") while
    ``whole`` has traffic and ``part`` has never happened."""
    grouping = f" by ({by})" if by else ""
    return f"({failures(part, whole, by)}) / sum{grouping} (rate({whole}[{RATE}]))"


def failures(part: str, whole: str, by: str = "") -> str:
    """The per-second rate of ``part`` (a subset of ``whole``), 0 rather than "No data" when it never happened:
    a failure series exists only from its first failure, and a panel should say "none" until then."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({part}[{RATE}])) or 0 * sum{grouping} (rate({whole}[{RATE}]))"


# --- links to traces -------------------------------------------------------------------------------------------


def explore_traces(traceql: str) -> str:
    """A URL opening Explore on Tempo with a TraceQL query over the dashboard's time range.

    The pane is percent-encoded JSON, except Grafana's ``${...}`` variables, which Grafana substitutes when
    the link is followed (time range, the labels of the series clicked).
    """
    query = {"refId": "A", "datasource": TEMPO, "queryType": "traceql", "query": traceql, "limit": 20}
    pane = {"traces": {"datasource": TEMPO_UID, "queries": [query], "range": {"from": "${__from}", "to": "${__to}"}}}
    encoded = quote(json.dumps(pane, separators=(",", ":")), safe="")
    encoded = re.sub(r"%24%7B(.*?)%7D", lambda match: "${" + unquote(match.group(1)) + "}", encoded)
    return f"/explore?schemaVersion=1&orgId=1&panes={encoded}"


def traceql(*conditions: str) -> str:
    """A TraceQL span set of ragwatch's spans matching every condition."""
    return "{" + " && ".join(['resource.service.name="ragwatch"', *conditions]) + "}"


def trace_link(title: str, *conditions: str) -> Json:
    return {"title": title, "url": explore_traces(traceql(*conditions)), "targetBlank": True}


ALL_TRACES = trace_link("All ragwatch traces in Tempo")
SLOW_REQUESTS = trace_link("Requests slower than 2.56 s in Tempo", "kind=server", "duration>2560ms")
FAILED_REQUESTS = trace_link("Failed requests in Tempo", "kind=server", "status=error")
SLOW_CHATS = trace_link(
    "/v1/chat requests slower than 5.12 s in Tempo", "kind=server", 'span.http.route="/v1/chat"', "duration>5120ms"
)
ROUTE_TRACES = trace_link(
    "Traces of ${__field.labels.method} ${__field.labels.endpoint}",
    "kind=server",
    'span.http.route="${__field.labels.endpoint}"',
)
MODEL_TRACES = trace_link(
    "Traces of ${__field.labels.gen_ai_request_model} calls",
    'span.gen_ai.request.model="${__field.labels.gen_ai_request_model}"',
)
TENANT_TRACES = trace_link("Traces of tenant ${__field.labels.tenant}", 'span.rag.tenant.id="${__field.labels.tenant}"')
EXEMPLARS = "Exemplars (with OTLP export) mark sampled requests: hover one to open its trace in Tempo."


# --- panels ------------------------------------------------------------------------------------------------------


def thresholds(base: str, *steps: tuple[float, str]) -> Json:
    """Absolute thresholds: ``base`` colour below the first step, then each step's colour from its value up."""
    return {
        "mode": "absolute",
        "steps": [{"color": base, "value": None}, *({"color": color, "value": value} for value, color in steps)],
    }


NEUTRAL = thresholds("blue")  # for panels where no value is good or bad in itself
REQUEST_LATENCY = thresholds("green", (2.56, "yellow"), (5.12, "red"))  # 5.12 s: the chat latency SLO
ERROR_RATIO = thresholds("green", (AVAILABILITY_BUDGET, "yellow"), (0.05, "red"))
UP = thresholds("red", (1.0, "green"))
UP_DOWN = [{"type": "value", "options": {"0": {"text": "down", "color": "red"}, "1": {"text": "up", "color": "green"}}}]


def prom(expr: str, legend: str = "__auto", *, exemplar: bool = False, instant: bool = False) -> Json:
    """A Prometheus query; ``exemplar`` also fetches the trace exemplars of a histogram."""
    target: Json = {"datasource": PROMETHEUS, "editorMode": "code", "expr": expr, "legendFormat": legend}
    target.update({"instant": True, "range": False, "format": "time_series"} if instant else {"range": True})
    if exemplar:
        target["exemplar"] = True
    return target


def quantiles(bucket: str, by: str, legend: str, qs: Sequence[float] = (0.5, 0.95, 0.99)) -> list[Json]:
    """Quantiles of the histogram whose ``_bucket`` selector is ``bucket``, per ``by``; exemplars for durations."""
    return [
        prom(
            f"histogram_quantile({q}, sum by (le, {by}) (rate({bucket}[{RATE}])))",
            f"p{round(q * 100)} {legend}",
            exemplar="_seconds_bucket" in bucket,
        )
        for q in qs
    ]


def panel(
    kind: str,
    title: str,
    description: str,
    targets: Sequence[Json],
    *,
    unit: str,
    steps: Json,
    size: tuple[int, int],
    datasource: Json = PROMETHEUS,
    options: Json | None = None,
    custom: Json | None = None,
    links: Sequence[Json] = (),
    data_links: Sequence[Json] = (),
    mappings: Sequence[Json] = (),
    decimals: int | None = None,
    min_value: float | None = None,
    max_value: float | None = None,
) -> Json:
    """Any panel: ``links`` show in its header, ``data_links`` on the series or value clicked."""
    defaults: Json = {"unit": unit, "thresholds": steps, "mappings": list(mappings), "links": list(data_links)}
    optional = {"custom": custom, "decimals": decimals, "min": min_value, "max": max_value}
    defaults.update({key: value for key, value in optional.items() if value is not None})
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": datasource,
        "gridPos": {"h": size[1], "w": size[0]},
        "targets": [{**target, "refId": chr(ord("A") + index)} for index, target in enumerate(targets)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options or {},
        "links": list(links),
    }


def timeseries(
    title: str,
    description: str,
    targets: Sequence[Json],
    *,
    unit: str,
    steps: Json = NEUTRAL,
    size: tuple[int, int] = (12, 8),
    show_thresholds: bool = False,
    **extra: Any,
) -> Json:
    """A graph; ``show_thresholds`` draws the threshold steps as dashed lines."""
    custom = {
        "drawStyle": "line",
        "lineInterpolation": "linear",
        "lineWidth": 1,
        "fillOpacity": 10,
        "showPoints": "never",
        "spanNulls": False,
        "axisSoftMin": 0,
        "thresholdsStyle": {"mode": "dashed" if show_thresholds else "off"},
    }
    options = {
        "legend": {"showLegend": True, "displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel(
        "timeseries",
        title,
        description,
        targets,
        unit=unit,
        steps=steps,
        size=size,
        custom=custom,
        options=options,
        **extra,
    )


REDUCE_LAST = {"calcs": ["lastNotNull"], "fields": "", "values": False}


def stat(title: str, description: str, targets: Sequence[Json], *, unit: str, steps: Json, **extra: Any) -> Json:
    """A big number coloured by its thresholds, with a sparkline."""
    options = {"reduceOptions": REDUCE_LAST, "colorMode": "background", "graphMode": "area", "textMode": "auto"}
    extra.setdefault("size", (4, 5))
    return panel("stat", title, description, targets, unit=unit, steps=steps, options=options, **extra)


def bargauge(title: str, description: str, targets: Sequence[Json], *, unit: str, steps: Json, **extra: Any) -> Json:
    """Horizontal bars, one per series, coloured by the thresholds."""
    options = {"reduceOptions": REDUCE_LAST, "orientation": "horizontal", "displayMode": "gradient"}
    extra.setdefault("size", (12, 8))
    return panel("bargauge", title, description, targets, unit=unit, steps=steps, options=options, **extra)


def rows(*layout: Sequence[Json]) -> list[Json]:
    """Places the panels row by row, left to right, and numbers them."""
    panels: list[Json] = []
    y = 0
    for row in layout:
        x = 0
        for item in row:
            item["gridPos"].update(x=x, y=y)
            x += item["gridPos"]["w"]
            panels.append(item)
        if x > 24:
            raise ValueError(f"row wider than Grafana's 24 columns: {[item['title'] for item in row]}")
        y += max(item["gridPos"]["h"] for item in row)
    return [{"id": number, **item} for number, item in enumerate(panels, start=1)]


# --- dashboards ----------------------------------------------------------------------------------------------


def query_variable(name: str, label: str, query: str) -> Json:
    """A multi-value variable of Prometheus label values; "All" becomes the regex `.*`."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": PROMETHEUS,
        "definition": query,
        "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},  # label values
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "refresh": 2,
        "sort": 1,
        "regex": "",
        "hide": 0,
        "options": [],
    }


VARIABLES = [
    {
        "name": "datasource",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
        "current": {"selected": False, "text": "Prometheus", "value": PROMETHEUS_UID},
        "refresh": 1,
        "regex": "",
        "hide": 0,
        "options": [],
    },
    query_variable("environment", "Environment", "label_values(target_info, deployment_environment_name)"),
    query_variable(
        "instance", "Instance", 'label_values(target_info{deployment_environment_name=~"$environment"}, instance)'
    ),
    query_variable("tenant", "Tenant", "label_values(rag_tenant_llm_cost_total, tenant)"),
]

DASHBOARD_LINKS = [
    {
        "type": "dashboards",
        "title": "ragwatch",
        "tags": TAGS,
        "asDropdown": True,
        "includeVars": True,
        "keepTime": True,
        "targetBlank": False,
        "icon": "external link",
        "tooltip": "",
        "url": "",
    },
    {
        "type": "link",
        "title": "Traces (Tempo)",
        "tooltip": "Explore ragwatch's traces in Tempo over this time range",
        "url": ALL_TRACES["url"],
        "tags": [],
        "asDropdown": False,
        "includeVars": False,
        "keepTime": False,
        "targetBlank": True,
        "icon": "external link",
    },
]


def dashboard(uid: str, title: str, description: str, panels: list[Json]) -> Json:
    return {
        "id": None,
        "uid": uid,
        "title": title,
        "description": description,
        "tags": TAGS,
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": DASHBOARD_LINKS,
        "templating": {"list": VARIABLES},
        "panels": panels,
    }


def service_overview() -> Json:
    requests = series("rag_requests_total")
    errors = series("rag_requests_total", 'status=~"5.."')
    refused = series("rag_requests_total", 'status=~"4.."')
    route = "method, endpoint"
    in_flight = series("http_server_active_requests")
    up = series("rag_dependency_up")
    unrouted = series("http_server_request_duration_seconds_count", 'http_route=""')
    queue_full = 'error_type="queue_full"'

    def queue_fill(signal: str) -> Json:
        size = series(f"otel_sdk_processor_{signal}_queue_size")
        capacity = series(f"otel_sdk_processor_{signal}_queue_capacity")
        by = "instance, otel_component_name"
        return prom(f"max by ({by}) ({size}) / max by ({by}) ({capacity})", f"{signal}s {{{{instance}}}}")

    def latency(q: float) -> Json:
        name = f"p{round(q * 100)}"
        bucket = series("rag_request_duration_seconds_bucket")
        return timeseries(
            f"Request duration {name} by route",
            f"{name} of the time to answer a request, by route template (rag_request_duration_seconds). Click a"
            f" line for that route's traces. {EXEMPLARS}",
            quantiles(bucket, route, "{{method}} {{endpoint}}", [q]),
            unit="s",
            steps=REQUEST_LATENCY,
            size=(8, 9),
            links=[SLOW_REQUESTS, ALL_TRACES],
            data_links=[ROUTE_TRACES],
        )

    panels = rows(
        [
            stat(
                "Request rate",
                "Requests answered per second, all routes together (rag_requests_total).",
                [prom(f"sum(rate({requests}[{RATE}]))", "requests/s")],
                unit="reqps",
                steps=NEUTRAL,
            ),
            stat(
                "5xx ratio",
                "Share of requests answered with a 5xx status, all routes; the availability SLO allows 0.5 % on /v1.",
                [prom(ratio(errors, requests), "5xx")],
                unit="percentunit",
                steps=ERROR_RATIO,
                decimals=2,
                links=[FAILED_REQUESTS],
            ),
            stat(
                "4xx ratio",
                "Share of requests refused with a 4xx status: invalid input, authentication, rate limits (429).",
                [prom(ratio(refused, requests), "4xx")],
                unit="percentunit",
                steps=thresholds("green", (0.05, "yellow"), (0.25, "red")),
                decimals=1,
            ),
            stat(
                "In-flight requests",
                "Requests being served right now, over the selected instances (http_server_active_requests).",
                [prom(f"sum({in_flight})", "in flight")],
                unit="short",
                steps=thresholds("green", (50.0, "yellow"), (200.0, "red")),
            ),
            stat(
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
            timeseries(
                "Request rate by route",
                "Requests per second by method and route template. Click a line for that route's traces.",
                [prom(f"sum by ({route}) (rate({requests}[{RATE}]))", "{{method}} {{endpoint}}")],
                unit="reqps",
                data_links=[ROUTE_TRACES],
            ),
            timeseries(
                "Responses by status code",
                "Requests per second by the status code of the answer.",
                [prom(f"sum by (status) (rate({requests}[{RATE}]))", "{{status}}")],
                unit="reqps",
            ),
        ],
        [
            timeseries(
                "5xx ratio by route",
                "Share of each route's requests answered with a 5xx; dashed lines at the 0.5 % SLO and at 5 %.",
                [prom(ratio(errors, requests, route), "{{method}} {{endpoint}}")],
                unit="percentunit",
                steps=ERROR_RATIO,
                show_thresholds=True,
                links=[FAILED_REQUESTS],
                data_links=[ROUTE_TRACES],
            ),
            timeseries(
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
        [latency(0.5), latency(0.95), latency(0.99)],
        [
            panel(
                "state-timeline",
                "Dependency readiness over time",
                "rag_dependency_up of each dependency on the worst selected instance: green while it answers.",
                [prom(f"min by (dependency) ({up})", "{{dependency}}")],
                unit="none",
                steps=UP,
                mappings=UP_DOWN,
                size=(8, 8),
                custom={"fillOpacity": 70, "lineWidth": 0},
                options={
                    "mergeValues": True,
                    "showValue": "auto",
                    "alignValue": "left",
                    "rowHeight": 0.9,
                    "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
                    "tooltip": {"mode": "single", "sort": "none"},
                },
            ),
            timeseries(
                "In-flight requests by instance",
                "Saturation: requests each instance serves at once (http_server_active_requests).",
                [prom(f"sum by (instance) ({in_flight})", "{{instance}}")],
                unit="short",
                steps=thresholds("green", (50.0, "yellow"), (200.0, "red")),
                size=(8, 8),
            ),
            timeseries(
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
            timeseries(
                "Telemetry export queues",
                "How full the OpenTelemetry SDK's span and log queues are (size over capacity). A full queue"
                " drops what arrives next.",
                [queue_fill("span"), queue_fill("log")],
                unit="percentunit",
                steps=thresholds("green", (0.5, "yellow"), (0.8, "red")),
                show_thresholds=True,
                max_value=1.0,
            ),
            timeseries(
                "Telemetry lost",
                "Spans and log records dropped because the SDK queue was full, and items the OTLP exporters could"
                " not deliver, by signal (rag_telemetry_export_failures_total). Above zero, traces, logs or"
                " metrics have gaps.",
                [
                    prom(
                        failures(
                            series("otel_sdk_processor_span_processed_total", queue_full),
                            series("otel_sdk_processor_span_processed_total"),
                        ),
                        "spans dropped (queue full)",
                    ),
                    prom(
                        failures(
                            series("otel_sdk_processor_log_processed_total", queue_full),
                            series("otel_sdk_processor_log_processed_total"),
                        ),
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
            panel(
                "logs",
                "Recent error logs",
                "ERROR and FATAL records from Loki. Logs arrive over OTLP: the log line is the message, while the"
                " severity, trace_id and request context are structured metadata, so the query filters on"
                " severity_text rather than on parsed JSON. Expand a line for its fields: the Loki datasource's"
                " derived field turns trace_id into a link to the trace in Tempo.",
                [
                    {
                        "datasource": LOKI,
                        "editorMode": "code",
                        "expr": '{service_name="ragwatch"} | severity_text=~"ERROR|FATAL"'
                        ' | deployment_environment_name=~"$environment"',
                        "queryType": "range",
                    }
                ],
                unit="none",
                steps=NEUTRAL,
                size=(24, 10),
                datasource=LOKI,
                options={
                    "showTime": True,
                    "showLabels": False,
                    "showCommonLabels": False,
                    "wrapLogMessage": True,
                    "prettifyLogMessage": False,
                    "enableLogDetails": True,
                    "dedupStrategy": "none",
                    "sortOrder": "Descending",
                },
                links=[FAILED_REQUESTS],
            )
        ],
        [
            panel(
                "table",
                "Recent failed traces",
                "The latest ragwatch traces with a span in error, from Tempo; click a trace id to open it.",
                [{"datasource": TEMPO, "queryType": "traceql", "query": traceql("status=error"), "limit": 20}],
                unit="none",
                steps=NEUTRAL,
                size=(24, 8),
                datasource=TEMPO,
                options={"showHeader": True, "cellHeight": "sm"},
            )
        ],
    )
    return dashboard(
        "ragwatch-service-overview",
        "ragwatch / Service overview",
        "Rate, errors and duration by route; readiness of the dependencies; saturation; error logs and traces.",
        panels,
    )


def rag_pipeline() -> Json:
    calls = series("rag_llm_calls_total")
    # A call cancelled because the client went away is no LLM failure: the error ratios leave it out.
    failed = series("rag_llm_calls_total", 'status!~"ok|cancelled"')
    finished = series("rag_llm_calls_total", 'status!="cancelled"')
    model = "gen_ai_provider_name, gen_ai_request_model"
    model_legend = "{{gen_ai_provider_name}} {{gen_ai_request_model}}"
    chat_duration = series("gen_ai_client_operation_duration_seconds_bucket", 'gen_ai_operation_name="chat"')
    embed_duration = series("gen_ai_client_operation_duration_seconds_bucket", 'gen_ai_operation_name="embeddings"')
    lookups = series("rag_cache_lookups_total")
    hits = series("rag_cache_lookups_total", 'outcome="hit"')
    answers = series("rag_cache_lookups_total", 'cache="answers"')
    answer_hits = series("rag_cache_lookups_total", 'cache="answers"', 'outcome="hit"')
    retrievals = series("rag_retrieval_results_count")
    found_nothing = series("rag_retrieval_results_bucket", 'le="0"')
    db_queries = series("rag_vector_db_queries_total")
    db_errors = series("rag_vector_db_queries_total", 'status="error"')
    llm_errors = thresholds("green", (0.01, "yellow"), (0.05, "red"))
    hit_ratio = thresholds("orange", (0.2, "green"))
    nothing_found = thresholds("green", (0.1, "yellow"), (0.3, "red"))
    slow_chat_calls = trace_link(
        "LLM chat calls slower than 2.56 s in Tempo", 'span.gen_ai.operation.name="chat"', "duration>2560ms"
    )

    panels = rows(
        [
            stat(
                "LLM calls",
                "Chat calls to the answerer per second (rag_llm_calls_total).",
                [prom(f"sum(rate({calls}[{RATE}]))", "calls/s")],
                unit="ops",
                steps=NEUTRAL,
            ),
            stat(
                "LLM error ratio",
                "Share of chat calls that failed: any status but ok, leaving out calls cancelled because the client"
                " went away.",
                [prom(ratio(failed, finished), "errors")],
                unit="percentunit",
                steps=llm_errors,
                decimals=2,
            ),
            stat(
                "Answer cache hit ratio",
                "Share of answer-cache lookups that found an answer, which then needs no LLM call.",
                [prom(ratio(answer_hits, answers), "hit ratio")],
                unit="percentunit",
                steps=hit_ratio,
                decimals=1,
            ),
            stat(
                "Retrievals finding nothing",
                'Share of retrievals that returned no passage (the le="0" bucket of rag_retrieval_results): those'
                " chats answer that the knowledge base does not say, without an LLM call.",
                [prom(ratio(found_nothing, retrievals), "found nothing")],
                unit="percentunit",
                steps=nothing_found,
                decimals=1,
            ),
            stat(
                "LLM spend",
                "LLM spend (chat and embeddings) over the selected time range, priced from the model price table.",
                [prom(f"sum(increase({series('rag_llm_cost_total')}[$__range]))", "USD", instant=True)],
                unit="currencyUSD",
                steps=NEUTRAL,
                decimals=2,
                size=(8, 5),
            ),
        ],
        [
            timeseries(
                "LLM chat latency p50 / p95 / p99",
                "Duration of each chat call, by provider and model (gen_ai_client_operation_duration_seconds)."
                f" Click a line for that model's traces. {EXEMPLARS}",
                quantiles(chat_duration, model, model_legend),
                unit="s",
                steps=REQUEST_LATENCY,
                size=(12, 9),
                links=[slow_chat_calls],
                data_links=[MODEL_TRACES],
            ),
            timeseries(
                "Time to first token p50 / p95 / p99",
                "Time from a chat call to the first answer token a client can see (the first streamed"
                " delta; for an answer asked for whole, the answer itself), by provider and model"
                f" (rag_llm_time_to_first_token_seconds). {EXEMPLARS}",
                quantiles(series("rag_llm_time_to_first_token_seconds_bucket"), model, model_legend),
                unit="s",
                steps=thresholds("green", (1.28, "yellow"), (2.56, "red")),
                size=(12, 9),
                links=[slow_chat_calls],
                data_links=[MODEL_TRACES],
            ),
        ],
        [
            timeseries(
                "Embeddings latency p50 / p95 / p99",
                f"Duration of each embeddings call (questions and ingested chunks), by provider and model. {EXEMPLARS}",
                quantiles(embed_duration, model, model_legend),
                unit="s",
                steps=thresholds("green", (0.64, "yellow"), (2.56, "red")),
                links=[trace_link("Embeddings calls in Tempo", 'span.gen_ai.operation.name="embeddings"')],
                data_links=[MODEL_TRACES],
            ),
            timeseries(
                "LLM API HTTP duration p95",
                "p95 of the HTTP calls to the OpenAI-compatible API, by server (http_client_request_duration"
                f"_seconds); empty with the offline providers. {EXEMPLARS}",
                quantiles(
                    series("http_client_request_duration_seconds_bucket"),
                    "server_address",
                    "{{server_address}}",
                    [0.95],
                ),
                unit="s",
                steps=REQUEST_LATENCY,
                links=[trace_link("Calls to the LLM API in Tempo", "kind=client", "span.server.address!=nil")],
            ),
        ],
        [
            timeseries(
                "LLM calls by outcome",
                "Chat calls per second by provider, model and status: ok, or the problem type of the failure.",
                [
                    prom(
                        f"sum by (provider, model, status) (rate({calls}[{RATE}]))", "{{provider}} {{model}} {{status}}"
                    )
                ],
                unit="ops",
            ),
            timeseries(
                "LLM error ratio by provider and model",
                "Share of each model's chat calls that failed (cancelled calls left out); dashed lines at 1 % and 5 %.",
                [prom(ratio(failed, finished, "provider, model"), "{{provider}} {{model}}")],
                unit="percentunit",
                steps=llm_errors,
                show_thresholds=True,
                links=[trace_link("Failed LLM calls in Tempo", "span.gen_ai.operation.name!=nil", "status=error")],
            ),
        ],
        [
            timeseries(
                "Tokens per second",
                "Input and output tokens per second, by model (the sum of gen_ai_client_token_usage).",
                [
                    prom(
                        f"sum by (gen_ai_token_type, gen_ai_request_model) (rate("
                        f"{series('gen_ai_client_token_usage_sum')}[{RATE}]))",
                        "{{gen_ai_token_type}} {{gen_ai_request_model}}",
                    )
                ],
                unit="count:tokens/s",
                size=(8, 8),
            ),
            timeseries(
                "Tokens per call p50 / p95",
                "Tokens of one call, input and output (gen_ai_client_token_usage, powers-of-four buckets).",
                quantiles(
                    series("gen_ai_client_token_usage_bucket"),
                    "gen_ai_token_type",
                    "{{gen_ai_token_type}}",
                    [0.5, 0.95],
                ),
                unit="count:tokens",
                size=(8, 8),
            ),
            timeseries(
                "LLM spend per hour by model",
                "LLM spend rate in USD per hour, by provider and model (rag_llm_cost_total).",
                [
                    prom(
                        f"sum by (provider, model) (rate({series('rag_llm_cost_total')}[{RATE}])) * 3600",
                        "{{provider}} {{model}}",
                    )
                ],
                unit="currencyUSD",
                size=(8, 8),
            ),
        ],
        [
            timeseries(
                "Retrieval latency p50 / p95 / p99",
                "Hybrid retrieval: question embedding, vector and full-text search, fusion"
                f" (rag_retrieval_duration_seconds). {EXEMPLARS}",
                quantiles(series("rag_retrieval_duration_seconds_bucket"), "job", "retrieval"),
                unit="s",
                steps=thresholds("green", (0.1, "yellow"), (0.5, "red")),
                links=[trace_link("Retrievals slower than 100 ms in Tempo", 'name="rag.retrieve"', "duration>100ms")],
            ),
            timeseries(
                "Passages per retrieval",
                "Median and p95 of the passages a retrieval returned (rag_retrieval_results).",
                quantiles(series("rag_retrieval_results_bucket"), "job", "passages", [0.5, 0.95]),
                unit="count:passages",
                size=(6, 8),
            ),
            timeseries(
                "Retrievals finding nothing",
                "Share of retrievals that returned no passage; dashed lines at 10 % and 30 %.",
                [prom(ratio(found_nothing, retrievals), "found nothing")],
                unit="percentunit",
                steps=nothing_found,
                show_thresholds=True,
                size=(6, 8),
            ),
        ],
        [
            timeseries(
                "Cache hit ratio by cache",
                "Share of lookups that hit, in the embeddings, retrieval and answers caches"
                " (rag_cache_lookups_total). A lookup that failed bypassed the cache and counts as no hit.",
                [prom(ratio(hits, lookups, "cache"), "{{cache}}")],
                unit="percentunit",
                steps=hit_ratio,
                max_value=1.0,
            ),
            timeseries(
                "Cache lookups by outcome",
                "Lookups per second by cache and outcome: hit, miss, or error (Redis failed or the entry was"
                " unreadable).",
                [prom(f"sum by (cache, outcome) (rate({lookups}[{RATE}]))", "{{cache}} {{outcome}}")],
                unit="ops",
            ),
        ],
        [
            timeseries(
                "Vector DB queries by operation",
                "LanceDB queries per second by operation and status (rag_vector_db_queries_total).",
                [prom(f"sum by (operation, status) (rate({db_queries}[{RATE}]))", "{{operation}} {{status}}")],
                unit="ops",
            ),
            timeseries(
                "Vector DB error ratio",
                "Share of each LanceDB operation's queries that failed.",
                [prom(ratio(db_errors, db_queries, "operation"), "{{operation}}")],
                unit="percentunit",
                steps=thresholds("green", (0.001, "yellow"), (0.01, "red")),
                show_thresholds=True,
                links=[trace_link("Failed LanceDB queries in Tempo", 'span.db.system.name="lancedb"', "status=error")],
            ),
        ],
    )
    return dashboard(
        "ragwatch-rag-pipeline",
        "ragwatch / RAG pipeline",
        "The stages of an answer: retrieval, the caches, the LLM (latency, time to first token, tokens, errors,"
        " spend) and LanceDB.",
        panels,
    )


def tenants() -> Json:
    cost = series("rag_tenant_llm_cost_total", TENANT)
    tokens = series("rag_tenant_tokens_total", TENANT)
    decisions = series("rag_ratelimit_decisions_total")
    refusals = series("rag_ratelimit_decisions_total", 'outcome="refused"')
    fail_open = series("rag_ratelimit_decisions_total", 'outcome="error"')
    active = series("rag_active_tenants")
    other = ' Past the first 100 tenants a process sees, tenants share the label "other".'
    by_action_only = (
        " Rate-limit decisions carry no tenant label (only action and outcome), so refusals cannot be split by"
        " tenant here; the trace and access log of a refused request name its tenant."
    )

    def ingestion(title: str, metric: str, unit: str, what: str) -> Json:
        return timeseries(
            title,
            f"{what} per second by tenant ({metric}).{other}",
            [prom(f"sum by (tenant) (rate({series(metric, TENANT)}[{RATE}]))", "{{tenant}}")],
            unit=unit,
            size=(8, 8),
            data_links=[TENANT_TRACES],
        )

    panels = rows(
        [
            stat(
                "Active tenants",
                "Distinct tenants that made an authenticated request in the last 5 minutes (rag_active_tenants)."
                " Every replica sharing Redis reports the same fleet-wide count, hence max rather than sum.",
                [prom(f"max({active})", "tenants")],
                unit="short",
                steps=NEUTRAL,
                size=(6, 5),
            ),
            stat(
                "Rate-limit refusals",
                "Requests refused with 429 per second, chat and ingest together." + by_action_only,
                [prom(f"sum(rate({refusals}[{RATE}]))", "refused/s")],
                unit="reqps",
                steps=thresholds("green", (0.1, "yellow"), (1.0, "red")),
                size=(6, 5),
            ),
            stat(
                "Rate limiter failing open",
                "Decisions per second taken without the counters because Redis could not be reached: the request"
                " went through unchecked.",
                [prom(failures(fail_open, decisions), "fail-open/s")],
                unit="reqps",
                steps=thresholds("green", (0.001, "red")),
                size=(6, 5),
            ),
            stat(
                "LLM spend of the selected tenants",
                "Their LLM spend over the selected time range (rag_tenant_llm_cost_total).",
                [prom(f"sum(increase({cost}[$__range]))", "USD", instant=True)],
                unit="currencyUSD",
                steps=NEUTRAL,
                decimals=2,
                size=(6, 5),
            ),
        ],
        [
            timeseries(
                "Active tenants over time",
                "The fleet-wide count of tenants active in the last 5 minutes (max of rag_active_tenants over"
                " replicas); absent while Redis has been unreachable for 2 minutes.",
                [prom(f"max({active})", "active tenants")],
                unit="short",
                size=(8, 8),
            ),
            timeseries(
                "Rate-limit decisions by action",
                "Decisions per second by action (chat, ingest) and outcome (allowed, refused, error)." + by_action_only,
                [prom(f"sum by (action, outcome) (rate({decisions}[{RATE}]))", "{{action}} {{outcome}}")],
                unit="reqps",
                size=(8, 8),
            ),
            timeseries(
                "Refused share by action",
                "Share of each action's requests the rate limiter refused." + by_action_only,
                [prom(ratio(refusals, decisions, "action"), "{{action}}")],
                unit="percentunit",
                steps=thresholds("green", (0.01, "yellow"), (0.1, "red")),
                show_thresholds=True,
                size=(8, 8),
                links=[
                    trace_link("Rate-limited requests in Tempo", "kind=server", "span.http.response.status_code=429")
                ],
            ),
        ],
        [
            timeseries(
                "LLM spend per hour by tenant",
                "Each tenant's LLM spend rate in USD per hour (rag_tenant_llm_cost_total). Click a line for the"
                " tenant's traces." + other,
                [prom(f"sum by (tenant) (rate({cost}[{RATE}])) * 3600", "{{tenant}}")],
                unit="currencyUSD",
                size=(12, 9),
                data_links=[TENANT_TRACES],
            ),
            timeseries(
                "Tokens per second by tenant",
                "Each tenant's LLM tokens per second, input and output (rag_tenant_tokens_total)." + other,
                [
                    prom(
                        f"sum by (tenant, gen_ai_token_type) (rate({tokens}[{RATE}]))",
                        "{{tenant}} {{gen_ai_token_type}}",
                    )
                ],
                unit="count:tokens/s",
                size=(12, 9),
                data_links=[TENANT_TRACES],
            ),
        ],
        [
            bargauge(
                "Top 10 tenants by LLM spend",
                "The ten selected tenants that spent the most over the selected time range.",
                [prom(f"topk(10, sum by (tenant) (increase({cost}[$__range])))", "{{tenant}}", instant=True)],
                unit="currencyUSD",
                steps=NEUTRAL,
                decimals=2,
                data_links=[TENANT_TRACES],
            ),
            bargauge(
                "Top 10 tenants by tokens",
                "The ten selected tenants that used the most tokens (input and output) over the selected time range.",
                [prom(f"topk(10, sum by (tenant) (increase({tokens}[$__range])))", "{{tenant}}", instant=True)],
                unit="count:tokens",
                steps=NEUTRAL,
                decimals=0,
                data_links=[TENANT_TRACES],
            ),
        ],
        [
            ingestion(
                "Documents ingested by tenant",
                "rag_ingest_documents_total",
                "count:docs/s",
                "Documents ingested or replaced",
            ),
            ingestion("Chunks written by tenant", "rag_ingest_chunks_total", "count:chunks/s", "Chunks written"),
            ingestion("Text ingested by tenant", "rag_ingest_bytes_total", "Bps", "Document text (UTF-8 bytes)"),
        ],
    )
    return dashboard(
        "ragwatch-tenants",
        "ragwatch / Tenants",
        "Who uses ragwatch: active tenants, rate-limit refusals, tokens, LLM spend and ingestion per tenant.",
        panels,
    )


def slo() -> Json:
    budgets = {"errors": AVAILABILITY_BUDGET, "latency_slow": LATENCY_BUDGET}
    rules_only = " The recording rules aggregate by job: the environment and instance filters do not apply here."

    def rule(sli: str, window: str) -> str:
        return f'rag:sli_{sli}:ratio_rate{window}{{job="ragwatch"}}'

    def sli_now(title: str, sli: str, what: str) -> Json:
        objective = 1 - budgets[sli]
        return stat(
            title,
            f"{what} over the last 3 days (1 - rag:sli_{sli}:ratio_rate3d); the objective is {objective:.1%}."
            + rules_only,
            [prom(f"1 - {rule(sli, '3d')}", "SLI")],
            unit="percentunit",
            steps=thresholds("red", (objective, "green")),
            decimals=3,
            size=(6, 6),
        )

    def budget_left(title: str, record: str) -> Json:
        return stat(
            title,
            f"Share of the 30-day error budget still unspent ({record}, from alerts/rules/slo.yml, evaluated every"
            " 5 minutes over Prometheus' 30-day retention). Below zero the SLO is missed." + rules_only,
            [prom(f'{record}{{job="ragwatch"}}', "budget left")],
            unit="percentunit",
            steps=thresholds("red", (0.0, "orange"), (0.25, "yellow"), (0.5, "green")),
            decimals=1,
            size=(6, 6),
        )

    def sli_over_time(title: str, sli: str, link: Json) -> Json:
        objective = 1 - budgets[sli]
        return timeseries(
            title,
            f"1 - rag:sli_{sli}:ratio_rate over 1 hour and over 1 day; the dashed line is the {objective:.1%}"
            " objective." + rules_only,
            [prom(f"1 - {rule(sli, window)}", window) for window in ("1h", "1d")],
            unit="percentunit",
            steps=thresholds("red", (objective, "green")),
            show_thresholds=True,
            decimals=3,
            links=[link],
        )

    def burn_rates(title: str, sli: str, link: Json) -> Json:
        return timeseries(
            title,
            f"How fast each alert window spends the error budget: rag:sli_{sli}:ratio_rate<window> /"
            f" {budgets[sli]:g}. At 1 the budget lasts exactly the SLO period; the alerts fire when both windows"
            " of a pair exceed 14.4 (1h, 5m), 6 (6h, 30m), 3 (1d, 2h) or 1 (3d, 6h)." + rules_only,
            [prom(f"{rule(sli, window)} / {budgets[sli]:g}", window) for window in SLO_WINDOWS],
            unit="suffix:×",
            steps=thresholds("green", *BURN_RATE_STEPS),
            show_thresholds=True,
            size=(12, 9),
            links=[link],
        )

    def burn_rates_now(title: str, sli: str) -> Json:
        return bargauge(
            title,
            f"The current burn rate of every alert window (rag:sli_{sli}:ratio_rate<window> / {budgets[sli]:g}),"
            " coloured by the alert thresholds." + rules_only,
            [prom(f"{rule(sli, window)} / {budgets[sli]:g}", window, instant=True) for window in SLO_WINDOWS],
            unit="suffix:×",
            steps=thresholds("green", *BURN_RATE_STEPS),
            decimals=2,
            max_value=20.0,
        )

    env = "deployment_environment_name"
    # The SLIs as the recording rules define them: /v1 requests without a 5xx; POST /v1/chat within 5.12 s.
    answered = series("rag_requests_total", 'endpoint=~"/v1/.+"')
    good = series("rag_requests_total", 'endpoint=~"/v1/.+"', 'status!~"5.."')
    chat = ('method="POST"', 'endpoint="/v1/chat"')
    chats = series("rag_request_duration_seconds_count", *chat)
    fast_chats = series("rag_request_duration_seconds_bucket", *chat, 'le="5.12"')

    def by_environment(part: str, whole: str) -> str:
        return f"sum by ({env}) (increase({part}[$__range])) / sum by ({env}) (increase({whole}[$__range]))"

    panels = rows(
        [
            sli_now("Availability (3 days)", "errors", "Share of /v1 requests answered without a 5xx"),
            sli_now("Chat latency (3 days)", "latency_slow", "Share of POST /v1/chat requests answered within 5.12 s"),
            budget_left("Availability error budget left", "rag:error_budget_remaining:availability"),
            budget_left("Latency error budget left", "rag:error_budget_remaining:latency"),
        ],
        [
            sli_over_time("Availability SLI", "errors", FAILED_REQUESTS),
            sli_over_time("Chat latency SLI", "latency_slow", SLOW_CHATS),
        ],
        [
            burn_rates("Availability burn rate", "errors", FAILED_REQUESTS),
            burn_rates("Latency burn rate", "latency_slow", SLOW_CHATS),
        ],
        [
            burn_rates_now("Availability burn rate now", "errors"),
            burn_rates_now("Latency burn rate now", "latency_slow"),
        ],
        [
            bargauge(
                "Availability by environment (raw counters)",
                "Share of /v1 requests answered without a 5xx over the selected time range, per environment, from"
                " rag_requests_total itself, so the environment and instance filters apply.",
                [prom(by_environment(good, answered), "{{" + env + "}}", instant=True)],
                unit="percentunit",
                steps=thresholds("red", (1 - AVAILABILITY_BUDGET, "green")),
                decimals=3,
                min_value=0.9,
                max_value=1.0,
                links=[FAILED_REQUESTS],
            ),
            bargauge(
                "Chat latency by environment (raw counters)",
                "Share of POST /v1/chat requests answered within 5.12 s over the selected time range, per environment,"
                ' from the le="5.12" bucket of rag_request_duration_seconds.',
                [prom(by_environment(fast_chats, chats), "{{" + env + "}}", instant=True)],
                unit="percentunit",
                steps=thresholds("red", (1 - LATENCY_BUDGET, "green")),
                decimals=3,
                min_value=0.9,
                max_value=1.0,
                links=[SLOW_CHATS],
            ),
        ],
    )
    return dashboard(
        "ragwatch-slo",
        "ragwatch / SLOs",
        "Availability (99.5 % of /v1 requests without a 5xx) and chat latency (99 % of POST /v1/chat within"
        " 5.12 s): SLIs, error budget left and burn rates over the alert windows.",
        panels,
    )


DASHBOARDS: dict[str, Callable[[], Json]] = {
    "service-overview.json": service_overview,
    "rag-pipeline.json": rag_pipeline,
    "tenants.json": tenants,
    "slo.json": slo,
}


def render() -> dict[str, str]:
    """Each dashboard's file name and the exact text the file should hold."""
    return {name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: Sequence[str]) -> int:
    check = "--check" in argv
    stale = [name for name, text in render().items() if _read(HERE / name) != text]
    if check:
        if stale:
            print(f"out of date: {', '.join(stale)}; run python dashboards/generate.py", file=sys.stderr)
            return 1
        print("dashboards are up to date")
        return 0
    for name, text in render().items():
        (HERE / name).write_text(text, encoding="utf-8")
    print(f"wrote {', '.join(DASHBOARDS)} ({len(stale)} changed)")
    return 0


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.exists() else None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
