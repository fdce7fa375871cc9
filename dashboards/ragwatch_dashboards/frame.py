"""What every dashboard has around its panels: the ``ragwatch`` tag, the four template variables, the links to
the other dashboards and to Tempo, the built-in annotations, the time range and refresh."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import dashboard as dm

from .links import ALL_TRACES
from .queries import PROMETHEUS, PROMETHEUS_UID

TAGS = ["ragwatch"]


def query_variable(name: str, label: str, query: str) -> db.QueryVariable:
    """A multi-value variable of Prometheus label values (``label_values(...)``); "All" becomes the regex `.*`."""
    return (
        db.QueryVariable(name)
        .label(label)
        .datasource(PROMETHEUS)
        # qryType 1: the Prometheus variable editor's "label values" query.
        .query({"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"})
        .include_all(True)
        .all_value(".*")
        .multi(True)
        .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .regex("")
        .hide(dm.VariableHide.DONT_HIDE)
        .options([])
    )


def variables() -> list[cogbuilder.Builder[dm.VariableModel]]:
    """``$datasource`` (any Prometheus, uid ``prometheus`` by default), then ``$environment``, ``$instance`` and
    ``$tenant``, which every query's matchers use (``queries.SCOPE``, ``queries.TENANT``)."""
    return [
        db.DatasourceVariable("datasource")
        .label("Prometheus")
        .type("prometheus")
        .current(dm.VariableOption(selected=False, text="Prometheus", value=PROMETHEUS_UID))
        .regex("")
        .hide(dm.VariableHide.DONT_HIDE),
        query_variable("environment", "Environment", "label_values(target_info, deployment_environment_name)"),
        query_variable(
            "instance", "Instance", 'label_values(target_info{deployment_environment_name=~"$environment"}, instance)'
        ),
        query_variable("tenant", "Tenant", "label_values(rag_tenant_llm_cost_total, tenant)"),
    ]


def dashboard_links() -> list[cogbuilder.Builder[dm.DashboardLink]]:
    """The *ragwatch* menu of every dashboard with the tag (keeping the time range and variables), and Explore
    on Tempo."""
    return [
        db.DashboardLink("ragwatch")
        .type(dm.DashboardLinkType.DASHBOARDS)
        .tags(TAGS)
        .as_dropdown(True)
        .include_vars(True)
        .keep_time(True)
        .target_blank(False)
        .icon("external link")
        .tooltip("")
        .url(""),
        db.DashboardLink("Traces (Tempo)")
        .type(dm.DashboardLinkType.LINK)
        .tooltip("Explore ragwatch's traces in Tempo over this time range")
        .url(ALL_TRACES.build().url or "")
        .tags([])
        .as_dropdown(False)
        .include_vars(False)
        .keep_time(False)
        .target_blank(True)
        .icon("external link"),
    ]


BUILT_IN_ANNOTATIONS = (
    db.AnnotationQuery()
    .name("Annotations & Alerts")
    .datasource(dm.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
    .enable(True)
    .hide(True)
    .icon_color("rgba(0, 211, 255, 1)")
    .type("dashboard")
    .built_in(1)
)


def dashboard(uid: str, title: str, description: str, panels: list[dm.Panel | dm.RowPanel]) -> dm.Dashboard:
    """A ragwatch dashboard: the frame above around ``panels`` (laid out by ``panels.rows``)."""
    board = (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .timezone("browser")
        .editable()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .fiscal_year_start_month(0)
        .live_now(False)
        .refresh("30s")
        .version(1)
        .time("now-6h", "now")
        .annotation(BUILT_IN_ANNOTATIONS)
        .links(dashboard_links())
        .variables(variables())
        .build()
    )
    board.panels = panels
    return board
