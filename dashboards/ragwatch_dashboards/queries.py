"""The queries every dashboard shares: the data sources, PromQL selectors scoped to the selected environment,
instance and tenant, and the Prometheus, Loki and Tempo targets built from them."""

from __future__ import annotations

from collections.abc import Sequence

from grafana_foundation_sdk.builders import loki, prometheus, tempo
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.loki import LokiQueryType
from grafana_foundation_sdk.models.loki import QueryEditorMode as LokiEditorMode
from grafana_foundation_sdk.models.prometheus import PromQueryFormat
from grafana_foundation_sdk.models.prometheus import QueryEditorMode as PromEditorMode
from grafana_foundation_sdk.models.tempo import TempoQueryType

# Data source uids, as the observability stack provisions them (dashboards/provisioning/datasources).
PROMETHEUS_UID, TEMPO_UID, LOKI_UID = "prometheus", "tempo", "loki"
PROMETHEUS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")  # the dashboard's $datasource
TEMPO = dm.DataSourceRef(type_val="tempo", uid=TEMPO_UID)
LOKI = dm.DataSourceRef(type_val="loki", uid=LOKI_UID)

# Matchers of every service series. The "All" value is `.*`, which also matches series without the label.
SCOPE = ('job="ragwatch"', 'deployment_environment_name=~"$environment"', 'instance=~"$instance"')
TENANT = 'tenant=~"$tenant"'
RATE = "$__rate_interval"

Target = prometheus.Dataquery | loki.Dataquery | tempo.TempoQuery
"""A panel's query: PromQL, LogQL or TraceQL."""


def series(name: str, *matchers: str) -> str:
    """A selector of a ragwatch series: ``name{job=..., environment, instance, *matchers}``."""
    return name + "{" + ", ".join([*SCOPE, *matchers]) + "}"


def failures(part: str, whole: str, by: str = "") -> str:
    """The per-second rate of ``part`` (a subset of ``whole``), 0 rather than "No data" when it never happened:
    a failure series exists only from its first failure, and a panel should say "none" until then."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({part}[{RATE}])) or 0 * sum{grouping} (rate({whole}[{RATE}]))"


def ratio(part: str, whole: str, by: str = "") -> str:
    """``part`` over ``whole``, both as per-second rates summed ``by`` some labels; 0 (not "No data") while
    ``whole`` has traffic and ``part`` has never happened."""
    grouping = f" by ({by})" if by else ""
    return f"({failures(part, whole, by)}) / sum{grouping} (rate({whole}[{RATE}]))"


def share_over_range(part: str, whole: str, by: str = "") -> str:
    """``part`` over ``whole`` over the dashboard's whole time range (for sparse events such as feedback)."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (increase({part}[$__range])) / sum{grouping} (increase({whole}[$__range]))"


def average(histogram: str, *matchers: str, by: str = "", window: str = RATE) -> str:
    """The mean observation of a histogram over ``window``: the rate of its ``_sum`` over that of its ``_count``."""
    grouping = f" by ({by})" if by else ""
    total, count = series(f"{histogram}_sum", *matchers), series(f"{histogram}_count", *matchers)
    return f"sum{grouping} (rate({total}[{window}])) / sum{grouping} (rate({count}[{window}]))"


def prom(
    expr: str,
    legend: str = "__auto",
    *,
    exemplar: bool = False,
    instant: bool = False,
    table: bool = False,
    heatmap: bool = False,
) -> prometheus.Dataquery:
    """A Prometheus query in code mode; ``exemplar`` also fetches the trace exemplars of a histogram,
    ``instant`` asks for the value at the end of the range, ``table`` and ``heatmap`` set the result format."""
    query = (
        prometheus.Dataquery().datasource(PROMETHEUS).editor_mode(PromEditorMode.CODE).expr(expr).legend_format(legend)
    )
    query = query.instant() if instant else query.range()
    if table:
        query = query.format(PromQueryFormat.TABLE)
    elif heatmap:
        query = query.format(PromQueryFormat.HEATMAP)
    elif instant:
        query = query.format(PromQueryFormat.TIME_SERIES)
    return query.exemplar(True) if exemplar else query


def quantiles(
    bucket: str, by: str, legend: str, qs: Sequence[float] = (0.5, 0.95, 0.99), *, exemplar: bool | None = None
) -> list[prometheus.Dataquery]:
    """Quantiles of the histogram whose ``_bucket`` selector is ``bucket``, per ``by``; with exemplars for
    durations (``*_seconds_bucket``) unless ``exemplar`` says otherwise."""
    with_exemplars = "_seconds_bucket" in bucket if exemplar is None else exemplar
    return [
        prom(
            f"histogram_quantile({q}, sum by (le, {by}) (rate({bucket}[{RATE}])))",
            f"p{round(q * 100)} {legend}",
            exemplar=with_exemplars,
        )
        for q in qs
    ]


def logs(expr: str) -> loki.Dataquery:
    """A LogQL range query on the Loki data source."""
    return loki.Dataquery().datasource(LOKI).editor_mode(LokiEditorMode.CODE).expr(expr).query_type(LokiQueryType.RANGE)


def traceql(*conditions: str) -> str:
    """A TraceQL span set of ragwatch's spans matching every condition."""
    return "{" + " && ".join(['resource.service.name="ragwatch"', *conditions]) + "}"


def traces(query: str, limit: int = 20) -> tempo.TempoQuery:
    """A TraceQL search on the Tempo data source: the latest ``limit`` matching traces."""
    return tempo.TempoQuery().datasource(TEMPO).query_type(TempoQueryType.TRACEQL).query(query).limit(limit)
