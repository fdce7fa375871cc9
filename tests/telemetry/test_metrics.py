"""``/metrics``: the Prometheus exposition matches docs/metrics.md, keeps the enterprise guide's names, labels
routes by template and tenants within a bound, uses buckets that fit what they measure, and is served where
the settings say (the API port, its own port, or nowhere).

Most tests read one scripted traffic run that exercises every path: ingestion (JSON and upload), chat,
streamed chat, the OpenAI-compatible providers with priced models (tests/fake_openai.py, so cost metrics
appear), a provider error, four tenants with a tenant label limit of two, and an OTLP endpoint where nothing
listens (so export failures appear).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from service.container import telemetry_options
from telemetry import setup_telemetry
from telemetry.logs import configure_logging
from tests.fake_openai import CHAT, running_fake_openai
from tests.fake_openai import openai_env as fake_openai_env
from tests.support import (
    HANDBOOK,
    JWT_SECRET,
    RedisServer,
    auth,
    create_kb,
    free_port,
    ingest,
    live_server,
    make_settings,
    run_ragwatch,
)
from tests.telemetry import logging_restored
from tests.telemetry.otlp_receiver import exporting_to_nowhere, ragwatch_serve, wait_until

CATALOGUE = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
IGNORED_LABELS = frozenset({"otel_scope_name", "otel_scope_version", "otel_scope_schema_url", "le"})
"""Labels every series (or every histogram bucket) carries, which the catalogue leaves out."""
TENANTS = ("tenant-a", "tenant-b", "tenant-c", "tenant-d")
TENANT_LIMIT = 2
QUESTION = "How many days of paid vacation does an employee get?"
OTHER_QUESTION = "When are travel expenses reimbursed?"
ROUTES = frozenset(
    {
        "/v1/knowledge-bases",
        "/v1/knowledge-bases/{kb_id}",
        "/v1/knowledge-bases/{kb_id}/documents",
        "/v1/knowledge-bases/{kb_id}/documents/{document_id}",
        "/v1/chat",
        "/v1/feedback",
        "/v1/knowledge-bases/{kb_id}/probes",
        "/health/live",
        "/health/ready",
    }
)
GENAI_DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
"""The GenAI semantic conventions' advice for ``gen_ai.client.operation.duration``, in seconds."""


# --- reading the exposition and the catalogue -------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    name: str
    """As ``/metrics`` writes it in ``# TYPE``: a counter's name ends in ``_total``."""
    type: str
    labels: frozenset[str]
    samples: list[Sample]


def parse_exposition(text: str) -> dict[str, Family]:
    families = {}
    for family in text_string_to_metric_families(text):
        name = f"{family.name}_total" if family.type == "counter" else family.name
        labels = frozenset(label for sample in family.samples for label in sample.labels) - IGNORED_LABELS
        families[name] = Family(name, family.type, labels, list(family.samples))
    return families


@dataclass(frozen=True)
class Entry:
    name: str
    type: str
    labels: frozenset[str]


def parse_catalogue(markdown: str) -> dict[str, Entry]:
    """The rows of the catalogue's table: ``| `name` | type | unit | labels | meaning |``.

    Labels are back-quoted names, ``—`` for none, or ``as `other_family```.
    """
    rows = {}
    for line in markdown.splitlines():
        if not line.startswith("| `"):
            continue
        name, kind, _unit, labels, _meaning = (cell.strip() for cell in line.strip().strip("|").split("|"))
        rows[name.strip("`")] = (kind, labels)
    entries = {}
    for name, (kind, cell) in rows.items():
        labels = rows[cell.removeprefix("as ").strip("`")][1] if cell.startswith("as ") else cell
        entries[name] = Entry(name, kind, frozenset(re.findall(r"`([^`]+)`", labels)))
    return entries


CATALOGUE_ENTRIES = parse_catalogue(CATALOGUE.read_text())


def label_values(families: dict[str, Family], label: str) -> set[str]:
    return {sample.labels[label] for family in families.values() for sample in family.samples if label in sample.labels}


def bucket_bounds(family: Family) -> list[float]:
    """The finite ``le`` bounds of a histogram, in order."""
    bounds = {float(sample.labels["le"]) for sample in family.samples if sample.name.endswith("_bucket")}
    return sorted(bound for bound in bounds if not math.isinf(bound))


def total(family: Family, **labels: str) -> float:
    return sum(
        sample.value
        for sample in family.samples
        if sample.name == family.name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


# --- the scripted traffic run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Traffic:
    text: str
    families: dict[str, Family]
    raw_ids: list[str]
    """Knowledge base and document ids the run created: no label may carry them."""


def _script(client: httpx.Client, *, full: bool, fail_next_chat: object) -> list[str]:
    kb_id = create_kb(client, "handbook")
    document_id = ingest(client, kb_id, title="Handbook", text=HANDBOOK)["document_id"]
    ask = {"kb_id": kb_id, "question": QUESTION}
    assert client.post("/v1/chat", json=ask).status_code == 200
    if not full:
        return [kb_id, document_id]
    documents = f"/v1/knowledge-bases/{kb_id}/documents"
    uploaded = client.post(documents, files={"file": ("notes.md", b"# Notes\n\nParking is free on Fridays.")})
    assert uploaded.status_code == 201, uploaded.text
    assert client.get(documents).status_code == 200
    assert client.get(f"{documents}/{document_id}").status_code == 200
    assert client.post("/v1/chat", json={**ask, "stream": True}).status_code == 200
    assert client.post("/v1/chat", json=ask).json()["cached"] is True
    fail_next_chat()  # type: ignore[operator]
    assert client.post("/v1/chat", json={**ask, "question": OTHER_QUESTION}).status_code == 502
    assert client.get("/v1/knowledge-bases/kb_missing").status_code == 404
    assert client.delete(f"{documents}/{uploaded.json()['document_id']}").status_code == 204
    assert client.get("/health/live").status_code == 200
    assert client.get("/health/ready").status_code == 200
    trace_id = client.post("/v1/chat", json=ask).json()["trace_id"]
    assert client.post("/v1/feedback", json={"trace_id": trace_id, "rating": "down"}).status_code == 201
    probe = {"question": QUESTION, "expect": {"contains": "twenty-five"}}  # run within a second, last of all
    assert client.post(f"/v1/knowledge-bases/{kb_id}/probes", json=probe).status_code == 201
    return [kb_id, document_id, uploaded.json()["document_id"]]


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Traffic:
    """The service with OpenAI-compatible providers, Redis (a database of its own, so that no other test's
    tenants count as active), a token budget and a dead OTLP endpoint, after traffic on every path."""
    with exporting_to_nowhere(), running_fake_openai() as fake:
        settings = make_settings(
            tmp_path_factory.mktemp("metrics"),
            **fake_openai_env(fake.base_url, RAGWATCH_METRICS_TENANT_LIMIT=str(TENANT_LIMIT)),
            RAGWATCH_PROBE_INTERVAL_S="1",
            RAGWATCH_TENANT_TOKEN_BUDGET_PER_DAY="100000000",  # never reached, but its gauges are served
            RAGWATCH_REDIS_URL=redis_server.url.removesuffix("/0") + "/7",
        )
        raw_ids: list[str] = []
        telemetry = setup_telemetry(telemetry_options(settings))
        with logging_restored(), live_server(settings, telemetry=telemetry) as server:
            configure_logging(telemetry, "INFO", "json")  # so log records reach the (dead) OTLP endpoint too
            for number, tenant in enumerate(TENANTS):
                with server.client(auth(tenant)) as client:
                    raw_ids += _script(
                        client, full=number == 0, fail_next_chat=lambda: fake.fail_next(1, 500, path=CHAT)
                    )
            with server.client() as scraper:

                def settled() -> str | None:
                    text = scraper.get("/metrics").text
                    families = parse_exposition(text)
                    exported = {"traces", "metrics", "logs"} <= label_values(families, "signal")
                    active = "rag_active_tenants" in families and total(families["rag_active_tenants"]) == len(TENANTS)
                    probed = "rag_probe_success" in families
                    return text if exported and active and probed else None

                text = wait_until(settled, what="export failures of each signal, and the tenants published")
        telemetry.shutdown()
    return Traffic(text, parse_exposition(text), raw_ids)


# --- the catalogue ----------------------------------------------------------------------------------------


def test_the_catalogue_lists_exactly_the_metric_families_served(traffic: Traffic) -> None:
    served = set(traffic.families) - {"target_info"}
    assert sorted(served - set(CATALOGUE_ENTRIES)) == [], "served but not in docs/metrics.md"
    assert sorted(set(CATALOGUE_ENTRIES) - served) == [], "in docs/metrics.md but not served"


@pytest.mark.parametrize("name", sorted(CATALOGUE_ENTRIES))
def test_each_catalogued_family_has_the_type_and_labels_the_catalogue_gives(traffic: Traffic, name: str) -> None:
    entry = CATALOGUE_ENTRIES[name]
    family = traffic.families[name]
    assert family.type == entry.type
    assert sorted(family.labels) == sorted(entry.labels)


def test_the_resource_is_served_as_target_info(traffic: Traffic) -> None:
    [info] = traffic.families["target_info"].samples
    assert {"service_name", "service_version", "service_instance_id", "deployment_environment_name"} <= set(info.labels)
    assert info.labels["service_name"] == "ragwatch"


# --- the enterprise guide's names, and bounded labels -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "labels"),
    [
        ("rag_requests_total", "counter", {"method", "endpoint", "status"}),
        ("rag_request_duration_seconds", "histogram", {"method", "endpoint"}),
        ("rag_llm_calls_total", "counter", {"provider", "model", "status"}),
        ("rag_llm_cost_total", "counter", {"provider", "model"}),
        ("rag_vector_db_queries_total", "counter", {"operation", "status"}),
        ("rag_active_tenants", "gauge", set()),
    ],
)
def test_the_enterprise_guide_names_are_served_exactly(
    traffic: Traffic, name: str, kind: str, labels: set[str]
) -> None:
    assert f"# TYPE {name} {kind}" in traffic.text.splitlines()
    assert traffic.families[name].labels == labels


def test_endpoint_and_route_labels_are_route_templates_and_no_label_carries_a_raw_id(traffic: Traffic) -> None:
    endpoints = label_values(traffic.families, "endpoint")
    assert endpoints <= ROUTES
    assert {"/v1/knowledge-bases/{kb_id}/documents/{document_id}", "/v1/chat"} <= endpoints
    assert label_values(traffic.families, "http_route") <= ROUTES
    bounded = {"kb", "kb_id", "probe"}  # knowledge-base and probe ids, on purpose and bounded (docs/metrics.md)
    every_value = {
        value
        for family in traffic.families.values()
        for sample in family.samples
        for name, value in sample.labels.items()
        if name not in bounded
    }
    assert [value for value in every_value for raw in traffic.raw_ids if raw in value] == []


def test_the_tenant_label_names_the_first_tenants_up_to_the_limit_and_the_rest_other(traffic: Traffic) -> None:
    assert label_values(traffic.families, "tenant") == {"tenant-a", "tenant-b", "other"}
    documents = traffic.families["rag_ingest_documents_total"]
    assert total(documents, tenant="tenant-a") == 2  # JSON and upload
    assert total(documents, tenant="tenant-b") == 1
    assert total(documents, tenant="other") == 2  # tenant-c and tenant-d
    assert total(traffic.families["rag_active_tenants"]) == len(TENANTS)


def test_llm_calls_and_their_cost_are_counted_by_provider_model_and_outcome(traffic: Traffic) -> None:
    calls = traffic.families["rag_llm_calls_total"]
    probe_runs = total(traffic.families["rag_probe_runs_total"])  # each one chat call
    # a chat, a stream, a chat for each of 3 tenants, one to give feedback on, and the probe's runs
    assert total(calls, provider="openai", model="gpt-4o-mini", status="ok") == 1 + 1 + 3 + 1 + probe_runs
    assert total(calls, provider="openai", model="gpt-4o-mini", status="llm-provider-error") == 1

    cost = traffic.families["rag_llm_cost_total"]
    assert total(cost, provider="openai", model="gpt-4o-mini") > 0
    assert total(cost, provider="openai", model="text-embedding-3-small") > 0
    assert math.isclose(total(traffic.families["rag_tenant_llm_cost_total"]), total(cost), rel_tol=1e-9)


def test_failed_exports_are_counted_by_signal(traffic: Traffic) -> None:
    failures = traffic.families["rag_telemetry_export_failures_total"]
    assert total(failures, signal="traces") > 0
    assert total(failures, signal="metrics") > 0


# --- buckets ----------------------------------------------------------------------------------------------


def test_retrieval_duration_has_millisecond_buckets(traffic: Traffic) -> None:
    bounds = bucket_bounds(traffic.families["rag_retrieval_duration_seconds"])
    assert bounds[0] <= 0.001
    assert bounds[-1] <= 1.0


@pytest.mark.parametrize(
    "name",
    ["rag_request_duration_seconds", "gen_ai_client_operation_duration_seconds", "rag_llm_time_to_first_token_seconds"],
)
def test_request_and_llm_durations_have_the_genai_buckets_in_seconds(traffic: Traffic, name: str) -> None:
    assert bucket_bounds(traffic.families[name]) == GENAI_DURATION_BUCKETS


# --- where /metrics is served -----------------------------------------------------------------------------


def test_with_a_metrics_port_metrics_are_served_there_and_not_on_the_api_port(tmp_path: Path) -> None:
    metrics_port = free_port()
    with ragwatch_serve(tmp_path, RAGWATCH_METRICS_PORT=str(metrics_port)) as served:
        with served.client(auth()) as client:
            create_kb(client, "counted")
            on_api_port = client.get("/metrics")
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)

    assert on_api_port.status_code == 404
    assert scraped.status_code == 200
    content_type = scraped.headers["content-type"]
    assert content_type.startswith("text/plain; version=")
    assert content_type.count("charset") == 1
    requests = parse_exposition(scraped.text)["rag_requests_total"]
    assert total(requests, method="POST", endpoint="/v1/knowledge-bases", status="201") == 1


def test_with_metrics_disabled_there_is_no_metrics_route(tmp_path: Path) -> None:
    with live_server(make_settings(tmp_path, RAGWATCH_METRICS_ENABLED="false")) as server, server.client() as client:
        scraped = client.get("/metrics")
        schema = client.get("/schema/openapi.json").json()

    assert scraped.status_code == 404
    assert "/metrics" not in schema["paths"]


def test_serve_refuses_several_workers_while_it_serves_metrics(tmp_path: Path) -> None:
    refused = run_ragwatch(
        "serve", "--workers", "2", cwd=tmp_path, RAGWATCH_DATA_DIR=str(tmp_path), RAGWATCH_JWT_SECRET=JWT_SECRET
    )

    assert refused.returncode == 2
    [line] = refused.stderr.splitlines()
    assert line.startswith("ragwatch: --workers")
    assert "RAGWATCH_METRICS_ENABLED=false" in line
    assert refused.stdout == ""
