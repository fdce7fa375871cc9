"""The shipped alerting, end to end, with the real binaries: ragwatch (its own process, with Redis and the local
OpenAI-compatible LLM), a real Prometheus scraping it with the rules of ``alerts/rules``, a real Alertmanager with
the routing of ``alerts/alertmanager.yml``, and a webhook receiver standing in for the pager and the chat.

The test changes only timings: Prometheus scrapes and evaluates every second, every ``for:`` is a few seconds,
and Alertmanager groups and repeats within seconds; receivers' URLs point at the test's webhook and their
credential files at the test's own. Everything else is the configuration as shipped.

One scripted traffic run exercises every path: answers, cache hits, streamed answers, a question the knowledge
base does not cover, refused tokens, unknown knowledge bases, rate-limit refusals, and an LLM provider outage
(its errors answer 502). Then a page must arrive with its labels and runbook, and resolve after recovery; and
every metric a dashboard panel or a rule names must exist, and every panel's query return data.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fake_openai import CHAT, FakeOpenAI, openai_env, running_fake_openai
from tests.stack.binaries import Notification, Prometheus, WebhookReceiver, alertmanager, prometheus, webhook_receiver
from tests.support import HANDBOOK, RedisServer, auth, create_kb, free_port, ingest, serving_process, wait_until

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "alerts" / "rules").glob("*.yml"))
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
CREDENTIALS = "test-pager-credentials"
USER_LIMIT_PER_MINUTE = 20
LLM_FAILURES = 12
RECOVERY_REQUESTS = 600
COLLECTOR_ONLY = ("otelcol_",)
"""Metrics only the OpenTelemetry Collector exports: no collector runs here (it comes as a container image)."""


# --- the shipped configuration, with the test's timings and endpoints ------------------------------------


def rule_files_with_short_for(directory: Path) -> list[str]:
    """Copies of the shipped rule files whose ``for:`` durations are all 2 s and whose groups are evaluated
    every second (as the global evaluation interval is)."""
    directory.mkdir(parents=True, exist_ok=True)
    copies = []
    for rules in RULES:
        copy = directory / rules.name
        text = re.sub(r"(?m)^(\s+)for: \S+$", r"\1for: 2s", rules.read_text())
        copy.write_text(re.sub(r"(?m)^(\s+)interval: \S+$", r"\1interval: 1s", text))
        copies.append(str(copy))
    return copies


def alertmanager_config(receiver: WebhookReceiver, credentials: Path) -> dict[str, Any]:
    """The shipped routing with every webhook sent to ``receiver`` (path: the receiver's name), credentials
    read from ``credentials``, and group and repeat intervals of seconds."""
    config: dict[str, Any] = yaml.safe_load((ROOT / "alerts" / "alertmanager.yml").read_text())
    for entry in config["receivers"]:
        for webhook in entry.get("webhook_configs", []):
            webhook["url"] = f"{receiver.url}/{entry['name']}"
            authorization = webhook.get("http_config", {}).get("authorization")
            if authorization and "credentials_file" in authorization:
                authorization["credentials_file"] = str(credentials)
    _shorten_route(config["route"])
    return config


def _shorten_route(route: dict[str, Any]) -> None:
    for key, value in (("group_wait", "1s"), ("group_interval", "1s"), ("repeat_interval", "1m")):
        if key in route:
            route[key] = value
    for child in route.get("routes", []):
        _shorten_route(child)


def prometheus_config(service_url: str, alertmanager_url: str, rule_files: list[str]) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": rule_files,
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager_url.removeprefix("http://")]}]}]},
        "scrape_configs": [
            {"job_name": "ragwatch", "static_configs": [{"targets": [service_url.removeprefix("http://")]}]}
        ],
    }


# --- the stack and its traffic -----------------------------------------------------------------------------


@dataclass
class Stack:
    service: httpx.Client
    service_url: str
    fake: FakeOpenAI
    prometheus: Prometheus
    receiver: WebhookReceiver
    kb_id: str
    users: Iterator[int]

    def client_of(self, tenant: str = "acme") -> httpx.Client:
        """A client of a fresh user of ``tenant``, so that no user reaches the per-user rate limit by accident."""
        return httpx.Client(base_url=self.service_url, headers=auth(tenant, f"user-{next(self.users)}"), timeout=30)

    def chat(self, question: str, tenant: str = "acme", **fields: Any) -> httpx.Response:
        with self.client_of(tenant) as client:
            return client.post("/v1/chat", json={"kb_id": self.kb_id, "question": question, **fields})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("stack")
    credentials = work / "pager-credentials"
    credentials.write_text(CREDENTIALS)
    env = {
        "RAGWATCH_REDIS_URL": redis_server.url.removesuffix("/0") + "/9",
        "RAGWATCH_RATE_LIMIT_PER_MINUTE": str(USER_LIMIT_PER_MINUTE),
        # Export over OTLP to where nothing listens, so the export-failure metrics exist.
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "0.5",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "RAGWATCH_PROBE_INTERVAL_S": "1",
        # The outage below is the error-ratio path (a 502 each, the availability page, the provider ticket); an
        # open circuit's own page (LlmCircuitOpen) waits 2 minutes and has promtool tests.
        "RAGWATCH_LLM_BREAKER_FAILURES": str(LLM_FAILURES + 1),
        "RAGWATCH_TENANT_TOKEN_BUDGET_PER_DAY": "1000000000",  # never reached; its panel has data
    }
    with (
        running_fake_openai() as fake,
        serving_process(work / "service", **openai_env(fake.base_url, RAGWATCH_EMBEDDER="hashing", **env)) as service,
        webhook_receiver() as receiver,
        alertmanager(work / "alertmanager", alertmanager_config(receiver, credentials)) as manager,
        prometheus(
            work / "prometheus",
            prometheus_config(service.url, manager.url, rule_files_with_short_for(work / "rules")),
        ) as server,
        service.client(auth("acme", "admin")) as admin,
    ):
        # Prometheus starts scraping a few seconds after it starts; traffic before that would go unseen.
        wait_until(lambda: server.query('up{job="ragwatch"} == 1'), what="the first scrape of ragwatch", timeout_s=60)
        kb_id = create_kb(admin, "handbook")
        ingest(admin, kb_id, title="Handbook", text=HANDBOOK)
        yield Stack(admin, service.url, fake, server, receiver, kb_id, iter(range(1_000_000)))


def scripted_traffic(stack: Stack) -> None:
    """Every path once or more: answers, hits, streams, nothing found, uploads, refusals and 4xx."""
    admin = stack.service
    uploaded = admin.post(
        f"/v1/knowledge-bases/{stack.kb_id}/documents", files={"file": ("notes.md", b"# Notes\n\nParking is free.")}
    )
    assert uploaded.status_code == 201, uploaded.text
    # An answer computed while a write settles (RAGWATCH_READ_CONSISTENCY_S, 0.5 s) is dropped when it has, by
    # design: another replica may have computed it from the old data. Let the upload settle before the hits.
    time.sleep(0.6)
    for number in range(3):
        assert stack.chat(f"How many vacation days, take {number}?").status_code == 200
    assert stack.chat("How many vacation days do employees get?").json()["cached"] is False
    assert stack.chat("How many vacation days do employees get?").json()["cached"] is True
    assert stack.chat("When do vacation days expire?", stream=True).status_code == 200
    assert stack.chat("Which rocket engine powers Saturn?").json()["citations"] == []
    for rating in ("up", "down"):
        trace_id = stack.chat(f"How many vacation days, rated {rating}?").json()["trace_id"]
        assert admin.post("/v1/feedback", json={"trace_id": trace_id, "rating": rating}).status_code == 201
    # A golden question the handbook cannot answer: it fails every second without calling the LLM (nothing is
    # retrieved), so the outage below stays the fake provider's alone.
    probe = {"question": "Which rocket engine powers Saturn?", "expect": {"contains": "F-1"}}
    assert admin.post(f"/v1/knowledge-bases/{stack.kb_id}/probes", json=probe).status_code == 201
    assert admin.get("/v1/knowledge-bases/kb_missing").status_code == 404
    assert admin.get("/v1/no-such-route").status_code == 404
    assert (
        httpx.get(f"{stack.service_url}/v1/knowledge-bases", headers={"Authorization": "Bearer x"}).status_code == 401
    )
    with stack.client_of() as hammer:
        statuses = [hammer.get("/v1/knowledge-bases").status_code for _ in range(3)]
        statuses += [
            hammer.post("/v1/chat", json={"kb_id": stack.kb_id, "question": "vacation?"}).status_code
            for _ in range(USER_LIMIT_PER_MINUTE + 3)
        ]
    assert 429 in statuses
    assert admin.get("/health/ready").status_code == 200


def notifications(receiver: WebhookReceiver, path: str, alertname: str, status: str) -> list[Notification]:
    return [
        notification
        for notification in receiver.received()
        if notification.path == path
        and notification.body.get("status") == status
        and any(alert["labels"].get("alertname") == alertname for alert in notification.body.get("alerts", []))
    ]


def alert_of(notification: Notification, alertname: str) -> dict[str, Any]:
    alert: dict[str, Any] = next(a for a in notification.body["alerts"] if a["labels"]["alertname"] == alertname)
    return alert


# --- the page --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def outage(stack: Stack) -> Stack:
    """The traffic run, then an LLM provider outage (every chat answered 502), then recovery."""
    scripted_traffic(stack)
    stack.fake.fail_next(LLM_FAILURES, 500, path=CHAT)
    for number in range(LLM_FAILURES):
        assert stack.chat(f"Outage question {number}: how many vacation days?").status_code == 502
        # Spread over several scrapes: Prometheus counts a counter's increase from the first sample it saw
        # (a series born with 12 already in it shows no increase), as real traffic over minutes would be.
        time.sleep(1.5 if number == 0 else 0.25)
    return stack


def test_an_llm_provider_outage_pages_on_call_with_the_alerts_labels_and_runbook(outage: Stack) -> None:
    receiver = outage.receiver
    [page, *_] = wait_until(
        lambda: notifications(receiver, "/pager", "AvailabilityBudgetFastBurn", "firing"),
        what="the page",
        timeout_s=60,
        context=lambda: {
            "ratio": outage.prometheus.query("rag:sli_errors:ratio_rate5m"),
            "requests": outage.prometheus.query("sum by (endpoint, status) (rag_requests_total)"),
        },
    )
    alert = alert_of(page, "AvailabilityBudgetFastBurn")
    assert alert["labels"]["severity"] == "page"
    assert alert["labels"]["service"] == "ragwatch"
    runbook = alert["annotations"]["runbook_url"]
    assert runbook.endswith("/alerts/runbooks/AvailabilityBudgetFastBurn.md")
    assert (ROOT / "alerts" / "runbooks" / "AvailabilityBudgetFastBurn.md").is_file()
    assert alert["annotations"]["summary"]
    assert page.authorization == f"Bearer {CREDENTIALS}"
    # The provider's own error ratio is a ticket, in the chat.
    [ticket, *_] = wait_until(
        lambda: notifications(receiver, "/chat", "LlmProviderErrors", "firing"), what="the ticket", timeout_s=60
    )
    assert alert_of(ticket, "LlmProviderErrors")["labels"]["severity"] == "ticket"
    assert not notifications(receiver, "/pager", "LlmProviderErrors", "firing")


def test_the_page_resolves_once_the_provider_answers_again(outage: Stack) -> None:
    wait_until(
        lambda: notifications(outage.receiver, "/pager", "AvailabilityBudgetFastBurn", "firing"),
        what="the page",
        timeout_s=60,
    )
    for number in range(20):
        assert outage.chat(f"After the outage {number}: how many vacation days?").status_code == 200
    # Enough good requests that the error ratio falls below even the slow page's threshold (6 x 0.5 %).
    for _ in range(RECOVERY_REQUESTS):
        assert outage.service.get("/v1/knowledge-bases").status_code == 200
    wait_until(
        lambda: notifications(outage.receiver, "/pager", "AvailabilityBudgetFastBurn", "resolved"),
        what="the page's resolution",
        timeout_s=60,
    )


# --- every name the dashboards and rules use, with data -------------------------------------------------


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def prometheus_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, PromQL) of every Prometheus target, template variables filled in."""
    fills = {
        "$__rate_interval": "1m",
        "$__interval": "15s",
        "$__range": "1h",
        "$environment": ".*",
        "$instance": ".*",
        "$tenant": ".*",
    }
    queries = []
    for path in DASHBOARDS:
        for panel in panels(json.loads(path.read_text())):
            for target in panel.get("targets", []):
                if "expr" not in target or target.get("datasource", {}).get("type") == "loki":
                    continue
                expression = target["expr"]
                for variable, value in fills.items():
                    expression = expression.replace(variable, value)
                queries.append((path.stem, panel["title"], expression))
    return queries


def rule_expressions() -> list[tuple[str, str]]:
    return [
        (rule.get("alert") or rule["record"], rule["expr"])
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


METRIC = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{|\[)")


def test_after_the_traffic_run_every_panel_query_returns_data(outage: Stack) -> None:
    empty = []
    for dashboard, title, expression in prometheus_queries():
        if any(prefix in expression for prefix in COLLECTOR_ONLY):
            continue
        if not wait_for_data(outage.prometheus, expression):
            empty.append(f"{dashboard} / {title}: {expression}")
    assert empty == [], "\n".join(empty)


def wait_for_data(server: Prometheus, expression: str, timeout_s: float = 20) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.query(expression):
            return True
        time.sleep(0.5)
    return False


def test_every_metric_a_panel_or_rule_names_exists_in_prometheus(outage: Stack) -> None:
    named = {name for _, _, expression in prometheus_queries() for name in METRIC.findall(expression)}
    named |= {name for _, expression in rule_expressions() for name in METRIC.findall(expression)}
    functions = {"rate", "increase", "sum", "by", "without", "on", "ignoring", "histogram_quantile", "absent"}
    metrics = sorted(name for name in named - functions if not name.startswith(COLLECTOR_ONLY))
    missing = [name for name in metrics if not wait_for_data(outage.prometheus, f"count({{__name__={name!r}}})", 10)]
    assert missing == []
