"""The Grafana dashboards: what ``dashboards/generate.py`` writes (from the typed builders of
``dashboards/ragwatch_dashboards``), complete, built only on catalogued metrics, and every PromQL query accepted by
a real Prometheus (the Debian package's binary, started here)."""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import yaml

from tests.stack.binaries import prometheus

Json = dict[str, Any]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = ROOT / "dashboards"
CATALOGUE = ROOT / "docs" / "metrics.md"

EXPECTED_FILES = {"service-overview.json", "rag-pipeline.json", "tenants.json", "slo.json", "answer-quality.json"}
HISTOGRAM_SERIES = re.compile(r"_(?:bucket|sum|count)$")
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
QUALITY_SCORES = {
    "answer_groundedness": "rag.answer.groundedness",
    "answer_citation_coverage": "rag.answer.citation_coverage",
    "retrieval_top_score": "rag.retrieval.top_score",
}
"""The answer-quality histograms (``rag_<score>``) and the attribute of the chat span that carries each score."""
SLI_RULES = {f"rag:sli_{sli}:ratio_rate{window}" for sli in ("errors", "latency_slow") for window in SLO_WINDOWS}
RECORDING_RULES = {
    rule["record"]
    for path in sorted((ROOT / "alerts" / "rules").glob("*.yml"))
    for group in yaml.safe_load(path.read_text())["groups"]
    for rule in group["rules"]
    if "record" in rule
}
"""The recording rules of alerts/rules: aggregated by job, so no environment or instance is left to filter on."""
ALWAYS_PRESENT = {"up", "target_info"}
SCOPE = {'job="ragwatch"', 'deployment_environment_name=~"$environment"', 'instance=~"$instance"'}
TENANT = 'tenant=~"$tenant"'
DATASOURCE_UIDS = {"prometheus": "${datasource}", "loki": "loki", "tempo": "tempo"}
# What Grafana would put in place of its variables: "All" is `.*`; the intervals are typical values.
GRAFANA_VALUES = {
    "environment": ".*",
    "instance": ".*",
    "tenant": ".*",
    "__rate_interval": "5m",
    "__range": "1h",
    "__interval": "1m",
}
NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless"}
NOT_METRICS |= {"offset", "inf", "nan"}


def _load_dashboards() -> dict[str, Json]:
    return {path.name: json.loads(path.read_text(encoding="utf-8")) for path in sorted(DASHBOARD_DIR.glob("*.json"))}


DASHBOARDS = _load_dashboards()
PANELS = [(name, panel) for name, dashboard in DASHBOARDS.items() for panel in dashboard["panels"]]
PROMQL = [
    (f"{name} #{panel['id']} {panel['title']} {target['refId']}", panel, target)
    for name, panel in PANELS
    for target in panel["targets"]
    if target["datasource"]["uid"] == DATASOURCE_UIDS["prometheus"]
]
VARIABLE_QUERIES = [
    (f"{name} ${variable['name']}", variable["query"]["query"])
    for name, dashboard in DASHBOARDS.items()
    for variable in dashboard["templating"]["list"]
    if variable["type"] == "query"
]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ragwatch_dashboards_generate", DASHBOARD_DIR / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def _catalogue() -> dict[str, tuple[str, str]]:
    """docs/metrics.md's table: each Prometheus name with its type and its labels column."""
    rows = re.findall(r"^\| `([a-zA-Z_:][\w:]*)` \| (\w+) \| [^|]* \| ([^|]*) \|", CATALOGUE.read_text(), re.MULTILINE)
    catalogue = {name: (kind, labels) for name, kind, labels in rows}
    assert {"rag_requests_total", "rag_request_duration_seconds", "rag_dependency_up"} <= set(catalogue)
    return catalogue


def _allowed_metrics() -> set[str]:
    allowed = set(ALWAYS_PRESENT | RECORDING_RULES)
    for name, (kind, _) in _catalogue().items():
        allowed.add(name)
        if kind == "histogram":
            allowed |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return allowed


def _tenant_families() -> set[str]:
    return {name for name, (_, labels) in _catalogue().items() if "`tenant`" in labels}


def metric_names(expr: str) -> list[str]:
    """The metric names a PromQL expression reads: identifiers that are no function, keyword or label."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = re.findall(r"(?<![\w:.$])[a-zA-Z_:][\w:]*(?![\w:])(?!\s*\()", text)
    return [name for name in names if name.lower() not in NOT_METRICS]


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """Each ``metric{matchers}`` of an expression, with its matchers."""
    return [
        (match.group(1), {matcher.strip() for matcher in match.group(2).split(",")})
        for match in re.finditer(r"(?<![\w:.])([a-zA-Z_:][\w:]*)\{([^}]*)\}", expr)
    ]


def substitute(expr: str) -> str:
    """The expression as Grafana sends it, with its template variables replaced."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in GRAFANA_VALUES:
            pytest.fail(f"unknown template variable ${name} in {expr}")
        return GRAFANA_VALUES[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


def _variable_selector(definition: str) -> str:
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", definition)
    assert match is not None, definition
    return match.group(1)


def _is_latency(panel: Json) -> bool:
    return panel["type"] == "timeseries" and any(
        "histogram_quantile(" in target.get("expr", "") and "_seconds_bucket" in target.get("expr", "")
        for target in panel["targets"]
    )


def _expressions(name: str) -> str:
    dashboard = DASHBOARDS[name]
    return "\n".join(target.get("expr", "") for panel in dashboard["panels"] for target in panel["targets"])


# --- the files -------------------------------------------------------------------------------------------------


def test_the_committed_dashboards_are_what_generate_py_writes() -> None:
    rendered = _generator().render()
    assert set(rendered) == EXPECTED_FILES
    assert set(DASHBOARDS) == EXPECTED_FILES
    for name, text in rendered.items():
        committed = (DASHBOARD_DIR / name).read_text(encoding="utf-8")
        assert committed == text, f"dashboards/{name} is stale: run python dashboards/generate.py"


def test_each_dashboard_has_a_stable_uid_the_ragwatch_tag_and_a_current_schema() -> None:
    uids = [dashboard["uid"] for dashboard in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids)
    for name, dashboard in DASHBOARDS.items():
        assert re.fullmatch(r"ragwatch-[a-z-]+", dashboard["uid"]), name
        assert "ragwatch" in dashboard["tags"], name
        assert dashboard["schemaVersion"] >= 39, name
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(set(ids)) == len(ids), name
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, (name, panel["title"])


@pytest.mark.parametrize("name", sorted(EXPECTED_FILES))
def test_each_dashboard_has_the_shared_template_variables(name: str) -> None:
    variables = {variable["name"]: variable for variable in DASHBOARDS[name]["templating"]["list"]}
    assert {"datasource", "environment", "instance", "tenant"} <= set(variables)
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    expected = {
        "environment": "label_values(target_info, deployment_environment_name)",
        "instance": 'label_values(target_info{deployment_environment_name=~"$environment"}, instance)',
        "tenant": "label_values(rag_tenant_llm_cost_total, tenant)",
    }
    for variable_name, query in expected.items():
        variable = variables[variable_name]
        assert variable["type"] == "query"
        assert variable["datasource"]["uid"] == "${datasource}"
        # The SDK's variable model has no `definition` (the text Grafana's variable list shows): the label-values
        # query is the `query` object of the Prometheus variable editor.
        assert variable["query"]["qryType"] == 1
        assert variable["query"]["query"] == query
        assert variable["includeAll"] is True
        assert variable["allValue"] == ".*"


def test_each_dashboard_links_to_the_others_and_to_tempo() -> None:
    for name, dashboard in DASHBOARDS.items():
        kinds = {link["type"]: link for link in dashboard["links"]}
        assert kinds["dashboards"]["tags"] == ["ragwatch"], name
        assert kinds["link"]["url"].startswith("/explore?"), name
        assert "%22tempo%22" in kinds["link"]["url"], name


# --- the panels ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "panel"), PANELS, ids=[f"{name} #{panel['id']}" for name, panel in PANELS])
def test_every_panel_has_a_unit_thresholds_a_datasource_and_a_query(name: str, panel: Json) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    assert isinstance(defaults.get("unit"), str)
    assert defaults["unit"]
    steps = defaults["thresholds"]["steps"]
    assert defaults["thresholds"]["mode"] == "absolute"
    assert steps
    assert steps[0]["value"] is None
    assert all(isinstance(step["value"], float | int) for step in steps[1:])
    assert panel["title"]
    assert panel["description"]
    datasource = panel["datasource"]
    assert DATASOURCE_UIDS[datasource["type"]] == datasource["uid"]
    assert panel["targets"]
    for target in panel["targets"]:
        assert target["datasource"] == datasource
        assert (target.get("expr") or target.get("query") or "").strip()


def test_every_metric_the_queries_read_is_in_the_catalogue_or_a_recording_rule() -> None:
    allowed = _allowed_metrics()
    expressions = [target["expr"] for _, _, target in PROMQL]
    expressions += [_variable_selector(definition) for _, definition in VARIABLE_QUERIES]
    unknown = set()
    for expr in expressions:
        names = metric_names(substitute(expr))
        assert names, f"no metric found in {expr}"
        unknown |= set(names) - allowed
    assert not unknown, f"not in docs/metrics.md nor a recording rule: {sorted(unknown)}"


@pytest.mark.parametrize(("label", "panel", "target"), PROMQL, ids=[label for label, _, _ in PROMQL])
def test_every_series_is_scoped_to_ragwatch_and_the_selected_environment_instance_and_tenant(
    label: str, panel: Json, target: Json
) -> None:
    expr = target["expr"]
    found = selectors(expr)
    assert len(found) == len(metric_names(substitute(expr))), f"a metric without matchers in {expr}"
    for metric, matchers in found:
        if metric in RECORDING_RULES:  # aggregated by job: no environment or instance left to filter on
            assert 'job="ragwatch"' in matchers, expr
            continue
        assert matchers >= SCOPE, expr
        if HISTOGRAM_SERIES.sub("", metric) in _tenant_families() or metric in _tenant_families():
            assert TENANT in matchers, expr


def test_latency_panels_show_exemplars_and_lead_to_traces() -> None:
    latency = [(name, panel) for name, panel in PANELS if _is_latency(panel)]
    assert len(latency) >= 8
    for name, panel in latency:
        where = f"{name}: {panel['title']}"
        assert all(target.get("exemplar") is True for target in panel["targets"]), where
        links = panel["links"] + panel["fieldConfig"]["defaults"]["links"]
        assert any("/explore" in link["url"] and "%22tempo%22" in link["url"] for link in links), where
        assert "trace" in panel["description"].lower(), where


def test_the_error_log_panel_reads_ragwatch_errors_from_loki_with_trace_links() -> None:
    logs = [panel for panel in DASHBOARDS["service-overview.json"]["panels"] if panel["type"] == "logs"]
    assert len(logs) == 1
    (panel,) = logs
    assert panel["datasource"] == {"type": "loki", "uid": "loki"}
    (target,) = panel["targets"]
    assert target["expr"].startswith('{service_name="ragwatch"}')
    assert 'severity_text=~"ERROR|FATAL"' in target["expr"]
    assert "derived field" in panel["description"]
    assert "Tempo" in panel["description"]
    assert panel["options"]["enableLogDetails"] is True


def _links(panel: Json) -> list[Json]:
    return panel["links"] + panel["fieldConfig"]["defaults"]["links"]


def _traceql(link: Json) -> str:
    """The TraceQL query of a link to Explore on Tempo."""
    assert link["url"].startswith("/explore?")
    assert "%22tempo%22" in link["url"]
    pane = json.loads(unquote(link["url"].split("panes=", 1)[1]))
    (query,) = pane["traces"]["queries"]
    assert query["queryType"] == "traceql"
    return str(query["query"])


ANSWER_QUALITY = DASHBOARDS.get("answer-quality.json", {"panels": []})


@pytest.mark.parametrize(("score", "attribute"), sorted(QUALITY_SCORES.items()))
def test_the_answer_scores_show_their_distribution_and_exemplars_and_lead_to_the_poor_answers(
    score: str, attribute: str
) -> None:
    bucket = f"rag_{score}_bucket"
    panels = [
        panel
        for panel in ANSWER_QUALITY["panels"]
        if any(bucket in target.get("expr", "") for target in panel["targets"])
    ]
    assert {panel["type"] for panel in panels} >= {"heatmap", "timeseries"}, score
    for panel in panels:
        where = f"{panel['title']}"
        for target in panel["targets"]:
            if bucket in target["expr"]:
                assert target.get("exemplar") is True, where
        if panel["type"] == "heatmap":
            (target,) = panel["targets"]
            assert target["format"] == "heatmap", where
            assert target["expr"].startswith("sum by (le) (increase("), where
        queries = [_traceql(link) for link in _links(panel)]
        assert any(f"span.{attribute} < 0.5" in query for query in queries), where
        assert "trace" in panel["description"].lower(), where


def test_the_probe_table_shows_pass_or_fail_and_leads_to_the_probe_runs() -> None:
    (panel,) = [panel for panel in ANSWER_QUALITY["panels"] if panel["title"] == "Golden-question probes"]
    assert panel["type"] == "table"
    (target,) = panel["targets"]
    assert target["expr"].startswith("max by (kb_id, probe) (rag_probe_success{")
    assert target["instant"] is True
    assert target["format"] == "table"
    defaults = panel["fieldConfig"]["defaults"]
    (mapping,) = defaults["mappings"]
    assert mapping["type"] == "value"
    assert mapping["options"] == {"1": {"text": "pass", "color": "green"}, "0": {"text": "fail", "color": "red"}}
    assert [step["color"] for step in defaults["thresholds"]["steps"]] == ["red", "green"]
    colour_cells = [
        prop["value"]["type"]
        for override in panel["fieldConfig"]["overrides"]
        for prop in override["properties"]
        if prop["id"] == "custom.cellOptions"
    ]
    assert colour_cells == ["color-background"]
    (link,) = defaults["links"]
    query = _traceql(link)
    assert 'name="probe"' in query
    assert 'span.rag.probe.id="${__data.fields.probe}"' in query
    assert 'span.rag.kb.id="${__data.fields.kb_id}"' in query


def test_the_feedback_log_panel_reads_feedback_records_from_loki_with_trace_links() -> None:
    (panel,) = [panel for panel in ANSWER_QUALITY["panels"] if panel["type"] == "logs"]
    assert panel["datasource"] == {"type": "loki", "uid": "loki"}
    (target,) = panel["targets"]
    assert target["expr"].startswith('{service_name="ragwatch"}')
    assert 'rag_feedback_rating=~"up|down"' in target["expr"]
    assert 'deployment_environment_name=~"$environment"' in target["expr"]
    assert "derived field" in panel["description"]
    assert "Tempo" in panel["description"]
    assert panel["options"]["enableLogDetails"] is True


def test_each_dashboard_shows_what_it_is_for() -> None:
    wanted = {
        "service-overview.json": [
            "rag_requests_total",
            "rag_request_duration_seconds_bucket",
            "rag_dependency_up",
            "http_server_active_requests",
            "otel_sdk_processor_span_queue_size",
            "sum by (action) (rate(rag_requests_shed_total",
            "rag_requests_in_flight",
            "rag_requests_capacity",
        ],
        "rag-pipeline.json": [
            'gen_ai_client_operation_duration_seconds_bucket{job="ragwatch"',
            "rag_llm_time_to_first_token_seconds_bucket",
            "gen_ai_client_token_usage",
            "sum by (provider, model, status) (rate(rag_llm_calls_total",
            "rag_retrieval_duration_seconds_bucket",
            'le="0"',
            "sum by (cache) (rate(rag_cache_lookups_total",
        ],
        "tenants.json": [
            'outcome="refused"',
            "rag_tenant_tokens_total",
            "topk(10, sum by (tenant) (increase(rag_tenant_llm_cost_total",
            "max(rag_active_tenants",
        ],
        "slo.json": [
            *sorted(SLI_RULES),
            "rag:error_budget_remaining:availability",
            "rag:error_budget_remaining:latency",
        ],
        "answer-quality.json": [
            "sum by (rating) (rate(rag_answer_feedback_total",
            "sum by (tenant, kb, rating) (increase(rag_answer_feedback_total",
            'rag_answer_feedback_total{job="ragwatch"',
            'rating="down"',
            *(f"rag_{score}_bucket" for score in QUALITY_SCORES),
            *(f"rag_{score}_sum" for score in QUALITY_SCORES),
            'outcome="no_answer"',
            "sum by (outcome) (rate(rag_answers_total",
            "max by (kb_id, probe) (rag_probe_success",
            "sum by (result) (rate(rag_probe_runs_total",
            "rag_probe_duration_seconds_bucket",
        ],
    }
    for name, fragments in wanted.items():
        expressions = _expressions(name)
        missing = [fragment for fragment in fragments if fragment not in expressions]
        assert not missing, f"{name} lacks {missing}"
    everywhere = "\n".join(_expressions(name) for name in DASHBOARDS)
    assert "sum(rag_active_tenants" not in everywhere
    assert "sum by (instance) (rag_active_tenants" not in everywhere


# --- a real Prometheus -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A Prometheus of this module alone, with no target: it parses and evaluates, and holds no data."""
    config = {"global": {"scrape_interval": "15s"}, "scrape_configs": []}
    with (
        prometheus(tmp_path_factory.mktemp("prometheus"), config) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        yield client


def _accepted(client: httpx.Client, path: str, **params: str) -> None:
    response = client.post(path, data=params)
    body = response.json()
    assert body["status"] == "success", f"{params['query']}: {body.get('error')}"
    assert response.status_code == 200


@pytest.mark.parametrize(("label", "panel", "target"), PROMQL, ids=[label for label, _, _ in PROMQL])
def test_prometheus_accepts_every_panel_query(
    prometheus_client: httpx.Client, label: str, panel: Json, target: Json
) -> None:
    query = substitute(target["expr"])
    _accepted(prometheus_client, "/api/v1/query", query=query)
    if target.get("exemplar"):
        now = time.time()
        _accepted(prometheus_client, "/api/v1/query_exemplars", query=query, start=str(now - 3600), end=str(now))


@pytest.mark.parametrize(("label", "definition"), VARIABLE_QUERIES, ids=[label for label, _ in VARIABLE_QUERIES])
def test_prometheus_accepts_every_variable_selector(
    prometheus_client: httpx.Client, label: str, definition: str
) -> None:
    _accepted(prometheus_client, "/api/v1/query", query=substitute(_variable_selector(definition)))
