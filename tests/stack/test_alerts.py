"""The alerting rules, their unit tests, the runbooks and the Alertmanager routing, checked with the real binaries.

promtool, prometheus, amtool and prometheus-alertmanager are Debian packages that tests/ensure-system-deps.sh
installs; a missing one fails these tests rather than skipping them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.stack.binaries import Prometheus, Running, alertmanager, prometheus
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "alerts"
RULE_FILES = sorted((ALERTS / "rules").glob("*.yml"))
TEST_FILES = sorted((ALERTS / "tests").glob("*.yml"))
ALERTMANAGER_CONFIG = ALERTS / "alertmanager.yml"
RUNBOOK_URL = "https://github.com/ragwatch/ragwatch/blob/main/alerts/runbooks/{}.md"
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
WATCHDOG = "Watchdog"
RECEIVER_FOR_SEVERITY = {"page": "pager", "ticket": "chat"}
SECRETS_DIR = "/etc/alertmanager/secrets/"


def binary(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} is not installed: run `bash tests/ensure-system-deps.sh` (as root)"
    return path


def run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


@dataclass(frozen=True)
class Rule:
    file: str
    group: str
    body: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.body.get("alert") or self.body["record"])

    @property
    def labels(self) -> dict[str, str]:
        """The labels every alert of this rule carries whatever the series: its own, plus alertname."""
        labels = {key: str(value) for key, value in (self.body.get("labels") or {}).items()}
        if "alert" in self.body:
            labels["alertname"] = self.name
        return labels


def load_rules() -> list[Rule]:
    rules = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(Rule(path.name, group["name"], body) for body in group["rules"])
    return rules


RULES = load_rules()
ALERT_RULES = [rule for rule in RULES if "alert" in rule.body]
RECORDING_RULES = {rule.name: rule for rule in RULES if "record" in rule.body}
ALERT_NAMES = sorted({rule.name for rule in ALERT_RULES})


def alertmanager_config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    return loaded


# --- rule files --------------------------------------------------------------------------------------------


def test_there_are_rule_files_unit_tests_and_alerts() -> None:
    assert RULE_FILES
    assert TEST_FILES
    assert len(ALERT_NAMES) >= 20
    assert len(ALERT_NAMES) == len(ALERT_RULES), "an alert name is defined twice"


def test_promtool_accepts_every_rule_file_with_every_lint() -> None:
    result = run(binary("promtool"), "check", "rules", "--lint=all", "--lint-fatal", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_promtool_unit_tests_pass() -> None:
    result = run(binary("promtool"), "test", "rules", *map(str, TEST_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TEST_FILES), result.stdout


def test_the_unit_tests_load_every_rule_file() -> None:
    loaded = set()
    for path in TEST_FILES:
        for pattern in yaml.safe_load(path.read_text())["rule_files"]:
            matched = [found.resolve() for found in path.parent.glob(pattern)]
            assert matched, f"{path.name}: {pattern} matches no rule file"
            loaded.update(matched)
    assert loaded == {path.resolve() for path in RULE_FILES}


def test_a_healthy_idle_service_fires_nothing_but_the_watchdog() -> None:
    """alerts/tests/idle_test.yml feeds every rule a healthy service without traffic, and lists every alert."""
    idle = yaml.safe_load((ALERTS / "tests" / "idle_test.yml").read_text())
    assert idle["rule_files"] == ["../rules/*.yml"]
    cases = [case for group in idle["tests"] for case in group["alert_rule_test"]]
    assert sorted(case["alertname"] for case in cases) == ALERT_NAMES
    for case in cases:
        assert bool(case.get("exp_alerts")) == (case["alertname"] == WATCHDOG), case["alertname"]


@pytest.mark.parametrize("window", WINDOWS)
def test_the_slo_recording_rules_exist_for_every_window_aggregated_by_job(window: str) -> None:
    for name in (f"rag:sli_errors:ratio_rate{window}", f"rag:sli_latency_slow:ratio_rate{window}"):
        rule = RECORDING_RULES.get(name)
        assert rule is not None, f"missing recording rule {name}"
        assert rule.file == "slo.yml"
        expr = rule.body["expr"]
        assert f"[{window}]" in expr
        assert re.findall(r"sum by \(([^)]*)\)", expr), expr
        assert set(re.findall(r"sum by \(([^)]*)\)", expr)) == {"job"}, expr
        assert 'job="ragwatch"' in expr


def test_the_error_budget_recording_rules_exist() -> None:
    assert 'status=~"5.."' in RECORDING_RULES["rag:error_budget_remaining:availability"].body["expr"]
    assert "/ 0.005" in RECORDING_RULES["rag:error_budget_remaining:availability"].body["expr"]
    assert 'le="5.12"' in RECORDING_RULES["rag:error_budget_remaining:latency"].body["expr"]
    assert "/ 0.01" in RECORDING_RULES["rag:error_budget_remaining:latency"].body["expr"]


def test_the_burn_rate_alerts_use_the_agreed_windows_and_factors() -> None:
    expected = {
        "AvailabilityBudgetFastBurn": ("rag:sli_errors", ["1h", "5m", "6h", "30m"], ["14.4 * 0.005", "6 * 0.005"]),
        "AvailabilityBudgetSlowBurn": ("rag:sli_errors", ["1d", "2h", "3d", "6h"], ["3 * 0.005", "> 0.005"]),
        "LatencyBudgetFastBurn": ("rag:sli_latency_slow", ["1h", "5m", "6h", "30m"], ["14.4 * 0.01", "6 * 0.01"]),
        "LatencyBudgetSlowBurn": ("rag:sli_latency_slow", ["1d", "2h", "3d", "6h"], ["3 * 0.01", "> 0.01"]),
    }
    by_name = {rule.name: rule for rule in ALERT_RULES}
    for name, (prefix, windows, factors) in expected.items():
        expr = by_name[name].body["expr"]
        assert re.findall(r"(rag:[a-z_]+):ratio_rate(\w+)", expr) == [(prefix, window) for window in windows], name
        for factor in factors:
            assert factor in expr, (name, factor)


# --- the contract every alert follows ---------------------------------------------------------------------


@pytest.mark.parametrize("rule", ALERT_RULES, ids=lambda rule: rule.name)
def test_every_alert_has_the_labels_and_annotations_of_the_contract(rule: Rule) -> None:
    labels = rule.body.get("labels") or {}
    annotations = rule.body.get("annotations") or {}
    assert labels.get("service") == "ragwatch"
    if rule.name == WATCHDOG:
        assert "severity" not in labels, "Watchdog is routed by its name, to the dead man's switch"
    else:
        assert labels.get("severity") in RECEIVER_FOR_SEVERITY
    assert annotations.get("summary", "").strip()
    assert annotations.get("description", "").strip()
    assert annotations.get("runbook_url") == RUNBOOK_URL.format(rule.name)
    if rule.name != WATCHDOG:
        assert "for" in rule.body, "a single bad evaluation must not notify anyone"


@pytest.mark.parametrize("rule", ALERT_RULES, ids=lambda rule: rule.name)
def test_every_alert_has_a_runbook_that_says_how_to_confirm_and_mitigate(rule: Rule) -> None:
    runbook = ALERTS / "runbooks" / f"{rule.name}.md"
    assert runbook.is_file(), f"missing {runbook.relative_to(ROOT)}"
    text = runbook.read_text()
    assert text.startswith(f"# {rule.name}\n")
    for heading in ("## What it means", "## Confirm", "## Mitigate"):
        assert heading in text, f"{runbook.name} lacks {heading!r}"


def test_every_runbook_belongs_to_an_alert() -> None:
    runbooks = {path.stem for path in (ALERTS / "runbooks").glob("*.md")}
    assert runbooks == set(ALERT_NAMES)


def test_the_recording_rules_and_alerts_the_dashboards_use_are_documented() -> None:
    readme = (ALERTS / "README.md").read_text()
    for name in [*ALERT_NAMES, *RECORDING_RULES]:
        assert name in readme or re.sub(r"(5m|30m|1h|2h|6h|1d|3d)$", "<W>", name) in readme, name


# --- unit-test coverage -------------------------------------------------------------------------------------


def unit_test_cases() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in TEST_FILES:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test") or []:
                yield path.name, case


@pytest.mark.parametrize("alertname", ALERT_NAMES)
def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not(alertname: str) -> None:
    cases = [case for _, case in unit_test_cases() if case["alertname"] == alertname]
    firing = [case for case in cases if case.get("exp_alerts")]
    assert firing, f"no promtool test fires {alertname}"
    rule = next(rule for rule in ALERT_RULES if rule.name == alertname)
    for case in firing:
        for expected in case["exp_alerts"]:
            for label in ("severity", "service"):
                if label in rule.labels:
                    assert expected["exp_labels"].get(label) == rule.labels[label]
            assert expected["exp_annotations"]["runbook_url"] == RUNBOOK_URL.format(alertname)
    if alertname != WATCHDOG:  # always firing, by design: there is no input that silences it
        assert any(not case.get("exp_alerts") for case in cases), f"no promtool test keeps {alertname} quiet"


# --- Alertmanager --------------------------------------------------------------------------------------------


def test_amtool_accepts_the_alertmanager_configuration() -> None:
    result = run(binary("amtool"), "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def expected_receiver(rule: Rule) -> str:
    return "deadmansswitch" if rule.name == WATCHDOG else RECEIVER_FOR_SEVERITY[rule.labels["severity"]]


def route_test(labels: list[str], receiver: str) -> subprocess.CompletedProcess[str]:
    """``amtool config routes test`` of ``labels``, verifying that they reach ``receiver``."""
    command = ["config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", f"--verify.receivers={receiver}"]
    return run(binary("amtool"), *command, *labels)


@pytest.mark.parametrize("rule", ALERT_RULES, ids=lambda rule: rule.name)
def test_every_alert_is_routed_by_its_severity(rule: Rule) -> None:
    labels = [f"{key}={value}" for key, value in sorted(rule.labels.items())]
    receiver = expected_receiver(rule)
    result = route_test(labels, receiver)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=Anything", "severity=page"], "pager"),
        (["alertname=Anything", "severity=ticket"], "chat"),
        (["alertname=Anything", "severity=warning"], "chat"),
        (["alertname=Anything"], "chat"),
        (["alertname=Watchdog", "severity=page"], "deadmansswitch"),
    ],
)
def test_unknown_severities_still_reach_a_person(labels: list[str], receiver: str) -> None:
    result = route_test(labels, receiver)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_receiver_is_a_null_receiver() -> None:
    config = alertmanager_config()
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    assert config["route"]["receiver"] == "chat"
    for name, receiver in receivers.items():
        integrations = [value for key, value in receiver.items() if key.endswith("_configs")]
        assert integrations, f"receiver {name} sends nowhere"
        assert all(integrations), f"receiver {name} has an empty integration list"
    used = {config["route"]["receiver"], *(route["receiver"] for route in config["route"]["routes"])}
    assert used == set(receivers) == {"pager", "chat", "deadmansswitch"}


def test_the_receivers_take_their_credentials_from_files_that_are_not_committed() -> None:
    config = alertmanager_config()
    urls = {}
    for receiver in config["receivers"]:
        for webhook in receiver["webhook_configs"]:
            urls[receiver["name"]] = webhook["url"]
            authorization = webhook["http_config"]["authorization"]
            assert "credentials" not in authorization
            assert authorization["credentials_file"].startswith(SECRETS_DIR)
    assert urls == {
        "pager": "http://pager-bridge:8080/alertmanager",
        "chat": "http://chat-bridge:8080/alertmanager",
        "deadmansswitch": "http://deadmansswitch:8080/ping",
    }
    text = ALERTMANAGER_CONFIG.read_text()
    for inline_secret in ("password:", "bearer_token:", "credentials:", "api_key:", "routing_key:", "api_url:"):
        assert inline_secret not in text
    assert not list(ALERTS.rglob("*token*")), "a secret file was committed under alerts/"


def test_the_watchdog_is_repeated_often_and_pages_are_repeated_more_often_than_tickets() -> None:
    routes = {route["receiver"]: route for route in alertmanager_config()["route"]["routes"]}
    assert routes["deadmansswitch"]["repeat_interval"] == "5m"
    assert routes["pager"]["repeat_interval"] == "4h"
    assert routes["chat"]["repeat_interval"] == "24h"
    for name in ("alertname", "service"):
        assert name in alertmanager_config()["route"]["group_by"]


MATCHER = re.compile(r'^\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')


def matches(matchers: list[str], labels: dict[str, str]) -> bool:
    for matcher in matchers:
        parsed = MATCHER.match(matcher)
        assert parsed is not None, matcher
        name, operator, value = parsed.groups()
        actual = labels.get(name, "")
        ok = {
            "=": actual == value,
            "!=": actual != value,
            "=~": re.fullmatch(value, actual) is not None,
            "!~": re.fullmatch(value, actual) is None,
        }[operator]
        if not ok:
            return False
    return True


def test_every_inhibition_rule_names_real_alerts_and_its_equal_labels_exist_on_both_sides() -> None:
    for rule in alertmanager_config()["inhibit_rules"]:
        sources = [alert for alert in ALERT_RULES if matches(rule["source_matchers"], alert.labels)]
        targets = [alert for alert in ALERT_RULES if matches(rule["target_matchers"], alert.labels)]
        assert sources, rule
        assert targets, rule
        assert rule["equal"], "an inhibition without `equal` mutes every matching alert everywhere"
        for alert in sources + targets:
            for label in rule["equal"]:
                assert label in alert.labels, f"{alert.name} lacks {label!r}, used by {rule}"
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            parsed = MATCHER.match(matcher)
            assert parsed is not None
            if parsed.group(1) == "alertname" and parsed.group(2) == "=~":
                for name in parsed.group(3).split("|"):
                    assert name in ALERT_NAMES, f"inhibition names an alert that does not exist: {name}"


@pytest.mark.parametrize(
    ("source", "muted"),
    [
        ("ServiceDown", {"LlmProviderErrors", "AvailabilityBudgetFastBurn", "NoTraffic", "TelemetryExportFailing"}),
        ("MetricsAbsent", {"LatencyBudgetFastBurn", "RedisDown", "LanceDbDown"}),
        ("RedisDown", {"AnswerCacheHitRatioCollapse", "RateLimiterFailingOpen", "RateLimitRefusalSurge"}),
        ("OtelCollectorDown", {"TelemetryExportFailing", "TelemetryDropped", "OtelCollectorExportFailing"}),
        ("ServiceDown", {"GoldenQuestionFailing", "NegativeFeedbackHigh", "NoAnswerShareJump"}),
        ("MetricsAbsent", {"AnswerGroundednessLow", "RequestsShed"}),
        ("LanceDbDown", {"GoldenQuestionFailing"}),
        ("LlmProviderErrors", {"GoldenQuestionFailing"}),
        ("LlmCircuitOpen", {"LlmProviderErrors", "GoldenQuestionFailing"}),
    ],
)
def test_a_cause_mutes_its_symptoms(source: str, muted: set[str]) -> None:
    by_name = {alert.name: alert for alert in ALERT_RULES}
    rules = alertmanager_config()["inhibit_rules"]
    for target in muted:
        assert any(
            matches(rule["source_matchers"], by_name[source].labels)
            and matches(rule["target_matchers"], by_name[target].labels)
            for rule in rules
        ), f"{source} does not mute {target}"
    for never in ("Watchdog", "ServiceDown", "MetricsAbsent", "OtelCollectorDown"):
        assert not any(matches(rule["target_matchers"], by_name[never].labels) for rule in rules), never


# --- the real servers --------------------------------------------------------------------------------------------


@pytest.fixture
def prometheus_with_rules(tmp_path: Path) -> Iterator[Prometheus]:
    """A real Prometheus loading copies of the rule files whose groups are evaluated every second."""
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    for path in RULE_FILES:
        content = yaml.safe_load(path.read_text())
        for group in content["groups"]:
            group["interval"] = "1s"
        (rules_dir / path.name).write_text(yaml.safe_dump(content, sort_keys=False))
    config = {"global": {"evaluation_interval": "1s"}, "rule_files": [f"{rules_dir}/*.yml"]}
    with prometheus(tmp_path / "prometheus", config) as server:
        yield server


def test_a_real_prometheus_evaluates_every_rule_without_error(prometheus_with_rules: Prometheus) -> None:
    expected_groups = {(rule.file, rule.group) for rule in RULES}
    deadline = time.monotonic() + 30
    while True:
        groups = prometheus_with_rules.rule_groups()
        rules = [rule for group in groups for rule in group["rules"]]
        errors = [(rule["name"], rule.get("lastError")) for rule in rules if rule["health"] == "err"]
        assert not errors, errors
        if rules and all(rule["health"] == "ok" for rule in rules):
            break
        assert time.monotonic() < deadline, [(rule["name"], rule["health"]) for rule in rules]
        time.sleep(0.5)
    assert {(Path(group["file"]).name, group["name"]) for group in groups} == expected_groups
    assert sorted(rule["name"] for rule in rules) == sorted(rule.name for rule in RULES)
    alerts = prometheus_with_rules.alerts()
    assert [alert["labels"]["alertname"] for alert in alerts if alert["state"] == "firing"] == [WATCHDOG]


@pytest.fixture
def shipped_alertmanager(tmp_path: Path) -> Iterator[Running]:
    """A real Alertmanager with the shipped routing; the webhooks point at a closed local port instead."""
    closed = free_port()
    text = re.sub(r"http://[a-z-]+:8080", f"http://127.0.0.1:{closed}", ALERTMANAGER_CONFIG.read_text())
    with alertmanager(tmp_path / "alertmanager", yaml.safe_load(text)) as server:
        yield server


def test_a_real_alertmanager_mutes_symptoms_while_their_cause_fires(shipped_alertmanager: Running) -> None:
    by_name = {alert.name: alert for alert in ALERT_RULES}
    sent = ["RedisDown", "RateLimiterFailingOpen", "AnswerCacheHitRatioCollapse", "LanceDbDown", "Watchdog"]
    payload = [{"labels": {**by_name[name].labels, "instance": "api:8000"}} for name in sent]
    response = httpx.post(f"{shipped_alertmanager.url}/api/v2/alerts", json=payload, timeout=5)
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 10
    while True:
        listed = httpx.get(f"{shipped_alertmanager.url}/api/v2/alerts", timeout=5).json()
        states = {alert["labels"]["alertname"]: alert["status"]["state"] for alert in listed}
        if len(states) == len(sent) and states["RateLimiterFailingOpen"] == "suppressed":
            break
        assert time.monotonic() < deadline, json.dumps(listed, indent=1)
        time.sleep(0.2)
    assert states == {
        "RedisDown": "active",
        "RateLimiterFailingOpen": "suppressed",
        "AnswerCacheHitRatioCollapse": "suppressed",
        "LanceDbDown": "active",
        "Watchdog": "active",
    }
    receivers = {alert["labels"]["alertname"]: [r["name"] for r in alert["receivers"]] for alert in listed}
    assert receivers["LanceDbDown"] == ["pager"]
    assert receivers["RedisDown"] == ["chat"]
    assert receivers["Watchdog"] == ["deadmansswitch"]
