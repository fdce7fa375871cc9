"""Links from the dashboards to traces: Explore on Tempo with a TraceQL query over the dashboard's time range.

Panel header links (``links=``) name a kind of trace (slow requests, failed requests, poor answers); data links
(``data_links=``) open the traces of the series or row clicked, through Grafana's ``${__field.labels.*}`` and
``${__data.fields.*}`` variables.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote, unquote

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models.dashboard import DashboardLinkType

from .queries import TEMPO, TEMPO_UID, traceql


def explore_traces(query: str) -> str:
    """A URL opening Explore on Tempo with the TraceQL ``query`` over the dashboard's time range.

    The pane is percent-encoded JSON, except Grafana's ``${...}`` variables, which Grafana substitutes when
    the link is followed (time range, the labels or fields of what was clicked).
    """
    target = {
        "refId": "A",
        "datasource": {"type": TEMPO.type_val, "uid": TEMPO.uid},
        "queryType": "traceql",
        "query": query,
        "limit": 20,
    }
    pane = {"traces": {"datasource": TEMPO_UID, "queries": [target], "range": {"from": "${__from}", "to": "${__to}"}}}
    encoded = quote(json.dumps(pane, separators=(",", ":")), safe="")
    encoded = re.sub(r"%24%7B(.*?)%7D", lambda match: "${" + unquote(match.group(1)) + "}", encoded)
    return f"/explore?schemaVersion=1&orgId=1&panes={encoded}"


def trace_link(title: str, *conditions: str) -> db.DashboardLink:
    """A link (in a panel header, or on a series) to ragwatch's traces matching every TraceQL condition."""
    return (
        db.DashboardLink(title)
        .type(DashboardLinkType.LINK)
        .url(explore_traces(traceql(*conditions)))
        .target_blank(True)
    )


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
