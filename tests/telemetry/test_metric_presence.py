"""Every metric a dashboard or an alert rule reads exists without waiting for its first event, so a healthy
service shows 0 where it should, not "No data", and ``rate()`` has something to work with.

Counters of label values known at start (the configured provider and models, each cache and outcome, each
rate-limit action and outcome, each export signal, each Redis operation) exist from the first scrape. After
ordinary traffic with the offline default (one ingest, whole answers only), every series the rules and
dashboards read is there, time to first token and a free model's cost of 0 included.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from service.container import telemetry_options
from telemetry import setup_telemetry
from telemetry.logs import configure_logging
from tests.stack.test_dashboards import PROMQL, VARIABLE_QUERIES, _variable_selector, metric_names, substitute
from tests.support import (
    HANDBOOK,
    LiveServer,
    RedisServer,
    auth,
    create_kb,
    ingest,
    live_server,
    make_settings,
    serving_process,
)
from tests.telemetry import logging_restored
from tests.telemetry.otlp_receiver import exporting_to_nowhere
from tests.telemetry.test_metrics import parse_exposition, total

RULES = Path(__file__).resolve().parents[2] / "alerts" / "rules"
NOT_RAGWATCHS = {
    "up": "written by Prometheus itself",
    "http_client_request_duration_seconds_bucket": "only with an OpenAI-compatible provider (its HTTP calls)",
    "rag_llm_circuit_open": "only with an OpenAI-compatible provider (tests/service/test_circuit_breaker.py)",
    "rag_llm_retries_total": "only with an OpenAI-compatible provider (tests/service/test_circuit_breaker.py)",
    "rag_tenant_tokens_used": "only with a token budget and such a provider (tests/service/test_token_budgets.py)",
    "rag_tenant_token_budget": "only with a token budget and such a provider (tests/service/test_token_budgets.py)",
}
"""Series a rule or panel reads that no ragwatch process with the offline default writes."""
OFFLINE_MODELS = {("ragwatch", "extractive"), ("ragwatch", "hashing-384")}


def names_read_by_rules_and_dashboards() -> set[str]:
    expressions = [substitute(target["expr"]) for _, _, target in PROMQL]
    expressions += [substitute(_variable_selector(definition)) for _, definition in VARIABLE_QUERIES]
    for path in RULES.glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            expressions += [rule["expr"] for rule in group["rules"]]
    names = {name for expr in expressions for name in metric_names(expr)}
    recorded = {name for name in names if ":" in name}  # recording rules, built from the names below
    return {name for name in names - recorded if not name.startswith("otelcol_") and name not in NOT_RAGWATCHS}


@pytest.fixture(scope="module")
def offline_server(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[LiveServer]:
    """The offline default on Redis, exporting OTLP to an endpoint where nothing listens (so the SDK's own
    processor metrics exist); nothing has been asked of it yet."""
    with exporting_to_nowhere():
        settings = make_settings(
            tmp_path_factory.mktemp("presence"),
            RAGWATCH_REDIS_URL=redis_server.url.removesuffix("/0") + "/8",
            RAGWATCH_PROBE_INTERVAL_S="1",
        )
        telemetry = setup_telemetry(telemetry_options(settings))
        with logging_restored(), live_server(settings, telemetry=telemetry) as server:
            configure_logging(telemetry, "INFO", "json")  # as `ragwatch serve` does: log records go over OTLP too
            yield server
        telemetry.shutdown()


def test_counters_of_label_values_known_at_start_are_zero_from_the_first_scrape(offline_server: LiveServer) -> None:
    with offline_server.client() as scraper:
        families = parse_exposition(scraper.get("/metrics").text)

    for provider, model in OFFLINE_MODELS:
        assert total(families["rag_llm_cost_total"], provider=provider, model=model) == 0
    assert total(families["rag_llm_calls_total"], provider="ragwatch", model="extractive", status="ok") == 0
    for cache in ("embeddings", "retrieval", "answers"):
        for outcome in ("hit", "miss", "error"):
            assert total(families["rag_cache_lookups_total"], cache=cache, outcome=outcome) == 0
    for result in ("pass", "fail", "error"):
        assert total(families["rag_probe_runs_total"], result=result) == 0
    for action in ("chat", "ingest"):
        for outcome in ("allowed", "refused", "error"):
            assert total(families["rag_ratelimit_decisions_total"], action=action, outcome=outcome) == 0
    for signal in ("traces", "metrics", "logs"):
        assert {"signal": signal} in [
            {"signal": sample.labels["signal"]} for sample in families["rag_telemetry_export_failures_total"].samples
        ]
    for operation in ("cache", "ratelimit", "active_tenants", "conversations", "idempotency", "answers", "probes"):
        assert total(families["rag_redis_errors_total"], operation=operation) == 0


def test_after_offline_traffic_every_series_a_rule_or_panel_reads_exists(offline_server: LiveServer) -> None:
    with offline_server.client(auth("presence")) as client:
        kb_id = create_kb(client, "handbook")
        ingest(client, kb_id, title="Handbook", text=HANDBOOK)
        for _ in range(2):  # a computed answer, then a cached one; neither streamed
            ask = {"kb_id": kb_id, "question": "How many days of paid vacation does an employee get?"}
            assert client.post("/v1/chat", json=ask).status_code == 200
        probe = {"question": ask["question"], "expect": {"contains": "twenty-five"}}  # run within a second
        assert client.post(f"/v1/knowledge-bases/{kb_id}/probes", json=probe).status_code == 201
        trace_id = client.post("/v1/chat", json=ask).json()["trace_id"]
        assert client.post("/v1/feedback", json={"trace_id": trace_id, "rating": "up"}).status_code == 201
        assert client.get("/health/ready").status_code == 200
    wanted = names_read_by_rules_and_dashboards()
    with offline_server.client() as scraper:

        def missing_now() -> set[str] | None:
            """What is still missing, or ``None`` once nothing is (the SDK counts its batches as it exports)."""
            families = parse_exposition(scraper.get("/metrics").text)
            served = set(families) | {sample.name for family in families.values() for sample in family.samples}
            return (wanted - served) or None

        deadline = time.monotonic() + 10
        missing = missing_now()
        while missing and time.monotonic() < deadline:
            time.sleep(0.1)
            missing = missing_now()
        families = parse_exposition(scraper.get("/metrics").text)

    assert not missing, f"read by a rule or panel, absent after offline traffic: {sorted(missing)}"
    assert total(families["rag_tenant_llm_cost_total"], tenant="presence") == 0  # free, and said so


def test_a_served_process_on_redis_names_http_durations_by_the_stable_conventions(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The Redis client is instrumented before the HTTP server; the first instrumentation fixes the semantic
    conventions of all for the process, so it too must ask for the stable ones (a process of its own, since a
    test process has long fixed them)."""
    with serving_process(tmp_path / "data", RAGWATCH_REDIS_URL=redis_server.url) as running, running.client() as client:
        assert client.get("/health/live").status_code == 200
        families = parse_exposition(client.get("/metrics").text)

    assert "http_server_request_duration_seconds" in families
    assert "http_server_duration_milliseconds" not in families
