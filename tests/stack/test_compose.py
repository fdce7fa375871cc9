"""The deployment files are checked here, since no Docker engine runs where the tests do.

Beyond the Compose schema, the files must agree with each other: what compose mounts exists, every hostname
one service uses is a compose service, and every port one file names is the port the other side listens on
(compose, the collector, Prometheus, Tempo, Loki and Grafana). The Prometheus configuration also goes through
the real ``promtool``, and through a real ``prometheus`` scraping the real API and a stand-in for the
collector's exporter, to show the scrape design: ``up`` for the API, every metric once, exemplars kept.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import threading
import time
import typing
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema
import jsonschema.protocols
import jsonschema.validators
import yaml

from service.config import Secret, setting_variables
from tests.stack.binaries import prometheus
from tests.support import LiveServer

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_SCHEMA = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
"""The Compose Specification's schema as check-jsonschema vendors it: part of the dev install, not of ``../``."""
COLLECTOR = ROOT / "otel-collector.yaml"
PROMETHEUS = ROOT / "stack" / "prometheus.yml"
TEMPO = ROOT / "stack" / "tempo.yaml"
LOKI = ROOT / "stack" / "loki.yaml"
DATASOURCES = ROOT / "dashboards" / "provisioning" / "datasources" / "datasources.yaml"
DASHBOARD_PROVIDERS = ROOT / "dashboards" / "provisioning" / "dashboards" / "dashboards.yaml"
ENV_REFERENCE = re.compile(r"\$\{env:([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}")
PROBE = "/probe/busybox"
ANY_INTERFACE = "0.0.0.0"  # noqa: S104 (what a container listens on for its neighbours)


def _yaml(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def _compose() -> dict[str, Any]:
    return _yaml(ROOT / "docker-compose.yml")


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """``(source, target)`` of every volume entry, in short (``src:dst[:mode]``) or long syntax."""
    mounts = []
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            source, target = entry.split(":")[:2]
        else:
            source, target = entry.get("source", ""), entry["target"]
        mounts.append((source, target))
    return mounts


def _is_bind(source: str) -> bool:
    return source.startswith(("./", "../", "/"))


def _container_path(service: str, source: str) -> str:
    """Where ``service`` mounts the repository path ``source``."""
    targets = [target for mounted, target in _mounts(_services()[service]) if mounted == source]
    assert len(targets) == 1, f"{service} mounts {source} {len(targets)} times"
    return targets[0]


def _host_port(address: str) -> tuple[str, int]:
    """``host:port`` or a URL with an explicit port."""
    parts = urlsplit(address if "//" in address else f"//{address}")
    assert parts.hostname is not None, address
    assert parts.port is not None, address
    return parts.hostname, parts.port


def _with_defaults(value: Any) -> Any:
    """A collector setting as the collector reads it when no ``${env:...}`` variable is set."""
    if isinstance(value, str) and ENV_REFERENCE.search(value):
        return yaml.safe_load(ENV_REFERENCE.sub(lambda match: match.group(2) or "", value))
    return value


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def _flags(service: str) -> dict[str, str]:
    """``--name=value`` arguments of a service's command."""
    command = _services()[service].get("command", [])
    return dict(argument.split("=", 1) for argument in command if argument.startswith("--") and "=" in argument)


def _listen_port(service: str) -> int:
    """The HTTP port a compose service serves, read from its own configuration."""
    if service == "api":
        port = re.search(r"RAGWATCH_PORT=(\d+)", (ROOT / "Dockerfile").read_text())
        assert port is not None
        return int(port.group(1))
    if service == "tempo":
        return int(_yaml(TEMPO)["server"]["http_listen_port"])
    if service == "loki":
        return int(_yaml(LOKI)["server"]["http_listen_port"])
    defaults = {"prometheus": ("--web.listen-address", 9090), "alertmanager": ("--web.listen-address", 9093)}
    if service in defaults:
        flag, default = defaults[service]
        assert flag not in _flags(service), f"{service}: the checks below assume its default port"
        return default
    if service == "grafana":
        assert "GF_SERVER_HTTP_PORT" not in _services()["grafana"].get("environment", {})
        return 3000
    raise AssertionError(f"no known HTTP port for {service}")


def _prometheus_targets() -> dict[str, list[str]]:
    """Static targets of each scrape job."""
    return {
        job["job_name"]: [target for group in job["static_configs"] for target in group["targets"]]
        for job in _yaml(PROMETHEUS)["scrape_configs"]
    }


def _prometheus_job(name: str) -> dict[str, Any]:
    jobs = [job for job in _yaml(PROMETHEUS)["scrape_configs"] if job["job_name"] == name]
    assert len(jobs) == 1, name
    return jobs[0]


def _collector_http_port() -> int:
    return _host_port(_yaml(COLLECTOR)["receivers"]["otlp"]["protocols"]["http"]["endpoint"])[1]


def _collector_exporter_port() -> int:
    return _host_port(_yaml(COLLECTOR)["exporters"]["prometheus"]["endpoint"])[1]


def _collector_telemetry_port() -> int:
    readers = _yaml(COLLECTOR)["service"]["telemetry"]["metrics"]["readers"]
    [prometheus] = [reader["pull"]["exporter"]["prometheus"] for reader in readers if "pull" in reader]
    assert prometheus["host"] == ANY_INTERFACE, "Prometheus scrapes it from another container"
    return int(prometheus["port"])


# --- compose: schema, files, images, healthchecks, volumes ------------------------------------------------


def _compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator: jsonschema.protocols.Validator = jsonschema.validators.validator_for(schema)(schema)
    return validator


def test_the_compose_file_follows_the_compose_specification() -> None:
    _compose_validator().validate(_compose())


def test_the_compose_schema_refuses_what_compose_would_refuse() -> None:
    broken = _compose()
    broken["services"]["api"]["restart_policy"] = "sometimes"  # not a service key

    assert not _compose_validator().is_valid(broken)


def test_every_file_the_compose_file_builds_from_exists() -> None:
    api = _compose()["services"]["api"]
    assert (ROOT / api["build"] / "Dockerfile").is_file()


def test_the_api_container_listens_where_its_port_mapping_and_healthcheck_expect() -> None:
    api = _compose()["services"]["api"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    port = re.search(r"RAGWATCH_PORT=(\d+)", dockerfile)
    assert port is not None
    assert api["ports"] == [f"{port.group(1)}:{port.group(1)}"]
    assert f"127.0.0.1:{port.group(1)}/health/ready" in " ".join(api["healthcheck"]["test"])


def test_the_image_installs_exactly_what_the_lockfile_pins() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY .*\buv\.lock\b", dockerfile, flags=re.MULTILINE)
    assert "uv export --frozen" in dockerfile
    assert "--require-hashes" in dockerfile
    assert "pip install --no-deps ." in dockerfile


def test_the_image_runs_as_a_non_root_user_with_a_liveness_healthcheck() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)\S+", dockerfile, flags=re.MULTILINE)
    assert "HEALTHCHECK" in dockerfile
    assert "/health/live" in dockerfile


def test_secrets_reach_the_service_as_files_not_as_values_in_the_compose_file() -> None:
    compose = _compose()
    environment = compose["services"]["api"]["environment"]
    assert "RAGWATCH_JWT_SECRET" not in environment
    assert environment["RAGWATCH_JWT_SECRET_FILE"] == "/run/secrets/jwt-secret"
    assert compose["secrets"]["jwt-secret"]["file"].startswith("./secrets/")


def test_every_mounted_path_is_in_the_repository_except_the_git_ignored_secrets() -> None:
    compose = _compose()
    sources = [source for service in compose["services"].values() for source, _ in _mounts(service)]
    sources += [secret["file"] for secret in compose.get("secrets", {}).values()]
    secrets = [source for source in sources if source.startswith("./secrets/")]
    assert secrets, "the JWT secret at least comes from ./secrets/"
    assert "secrets/" in (ROOT / ".gitignore").read_text().splitlines()
    for source in sources:
        if _is_bind(source) and source not in secrets:
            assert (ROOT / source).resolve().is_relative_to(ROOT), source
            assert (ROOT / source).exists(), f"{source} is mounted but not in the repository"


def test_every_image_is_pinned_to_a_version() -> None:
    for name, service in _services().items():
        image = service.get("image")
        assert image, f"{name} names no image"
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: {image} has no tag"
        assert "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image}"
        if "build" not in service:
            assert re.fullmatch(r"v?\d+\.\d+(\.\d+)?([-.][a-z0-9.]+)?", tag), f"{name}: {image} is no version"


def _one_shot(name: str) -> bool:
    """A service that runs once and exits: everything that needs it waits for it to complete."""
    waits = [
        service["depends_on"][name]["condition"]
        for service in _services().values()
        if name in service.get("depends_on", {})
    ]
    return _services()[name].get("restart") == "no" and bool(waits) and set(waits) == {"service_completed_successfully"}


def test_every_long_running_service_has_a_healthcheck_and_starts_after_what_it_needs() -> None:
    services = _services()
    for name, service in services.items():
        if _one_shot(name):
            assert "healthcheck" not in service, f"{name} exits: no health to check"
            continue
        assert service.get("restart") == "unless-stopped", name
        check = service.get("healthcheck", {})
        assert check.get("test"), f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name} has its healthcheck disabled"
        assert check["test"][0] in {"CMD", "CMD-SHELL"}, name
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on without conditions"
        for needed, how in depends_on.items():
            assert needed in services, f"{name} depends on {needed}, no such service"
            expected = "service_completed_successfully" if _one_shot(needed) else "service_healthy"
            assert how.get("condition") == expected, f"{name} -> {needed}"


def test_healthchecks_of_images_without_tools_use_the_shared_probe_on_their_own_port() -> None:
    services = _services()
    probe = services["probe-tools"]
    assert _mounts(probe) == [("probe-tools", "/probe")]
    assert PROBE in " ".join(probe["command"])
    assert re.fullmatch(r"busybox:[\d.]+-uclibc", probe["image"]), "the uclibc busybox is statically linked"
    for name in ("otel-collector", "prometheus", "alertmanager", "tempo", "loki", "grafana"):
        service = services[name]
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", PROBE, "wget"], f"{name}: exec form, no shell needed"
        assert "probe-tools:/probe:ro" in service["volumes"], f"{name} mounts the probe read-only"
        assert service["depends_on"]["probe-tools"]["condition"] == "service_completed_successfully"
        host, port = _host_port(test[-1])
        assert host == "127.0.0.1", name
        if name == "otel-collector":
            assert port == _host_port(_yaml(COLLECTOR)["extensions"]["health_check"]["endpoint"])[1]
        else:
            assert port == _listen_port(name), name


def test_named_volumes_are_declared_and_every_declared_one_is_used() -> None:
    compose = _compose()
    declared = set(compose.get("volumes", {}))
    used = {source for service in compose["services"].values() for source, _ in _mounts(service)}
    named = {source for source in used if not _is_bind(source)}
    assert named <= declared, f"undeclared volumes: {named - declared}"
    assert declared <= named, f"declared but unused: {declared - named}"


def test_published_ports_map_to_the_ports_the_services_listen_on() -> None:
    for name, service in _services().items():
        for mapping in service.get("ports", []):
            container_port = int(str(mapping).rsplit(":", 1)[1])
            if name == "otel-collector":
                protocols = _yaml(COLLECTOR)["receivers"]["otlp"]["protocols"]
                assert container_port in {_host_port(entry["endpoint"])[1] for entry in protocols.values()}
            else:
                assert container_port == _listen_port(name), f"{name}: {mapping}"
            if name != "api":
                assert str(mapping).startswith("127.0.0.1:"), f"{name} is published on loopback only"


# --- the API's environment ----------------------------------------------------------------------------------


def _settings_the_service_reads() -> set[str]:
    names = set()
    for name, field in setting_variables():
        names.add(name)
        if Secret in (field.type, *typing.get_args(field.type)):
            names.add(f"{name}_FILE")
    return names


def test_the_api_environment_holds_only_variables_the_service_reads() -> None:
    environment = _services()["api"]["environment"]
    known = _settings_the_service_reads()
    for name in environment:
        assert name in known or name.startswith("OTEL_"), f"ragwatch does not read {name}"


def test_the_api_sends_telemetry_to_the_collector_and_state_to_redis() -> None:
    services = _services()
    environment = services["api"]["environment"]
    host, port = _host_port(environment["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert (host, port) == ("otel-collector", _collector_http_port())
    assert environment["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf", "4318 is OTLP over HTTP"
    assert environment["OTEL_RESOURCE_ATTRIBUTES"] == "deployment.environment.name=local"
    redis = urlsplit(environment["RAGWATCH_REDIS_URL"])
    assert (redis.scheme, redis.hostname, redis.port) == ("redis", "redis", 6379)
    assert "--port" not in services["redis"]["command"], "Redis listens on its default port"
    assert set(services["api"]["depends_on"]) == {"redis", "otel-collector"}
    assert environment.get("RAGWATCH_METRICS_ENABLED", "true") == "true", "Prometheus scrapes /metrics for `up`"
    assert "RAGWATCH_METRICS_PORT" not in environment


def test_redis_is_bounded_and_evicts_keys_that_expire() -> None:
    command = _services()["redis"]["command"]
    assert command[command.index("--maxmemory") + 1] == "256mb"
    assert command[command.index("--maxmemory-policy") + 1] == "volatile-lru"


# --- the collector --------------------------------------------------------------------------------------------


def test_every_collector_pipeline_limits_memory_first_and_batches_last() -> None:
    config = _yaml(COLLECTOR)
    pipelines = config["service"]["pipelines"]
    assert {"traces", "metrics", "logs"} <= set(pipelines)
    for name, pipeline in pipelines.items():
        processors = pipeline["processors"]
        assert processors[0] == "memory_limiter", name
        assert processors[-1] == "batch", name
        assert processors.index("memory_limiter") < processors.index("batch"), name
    assert pipelines["traces"]["processors"].index("tail_sampling") < pipelines["traces"]["processors"].index("batch")


def test_every_collector_component_is_defined_and_used() -> None:
    config = _yaml(COLLECTOR)
    pipelines = config["service"]["pipelines"].values()
    connectors = set(config.get("connectors", {}))
    for kind in ("receivers", "processors", "exporters"):
        used = {name for pipeline in pipelines for name in pipeline[kind]}
        defined = set(config[kind]) | connectors if kind != "processors" else set(config[kind])
        assert used <= defined, f"{kind} used but not defined: {used - defined}"
        assert set(config[kind]) <= used, f"{kind} defined but unused: {set(config[kind]) - used}"
    for connector in connectors:
        assert any(connector in pipeline["exporters"] for pipeline in pipelines), connector
        assert any(connector in pipeline["receivers"] for pipeline in pipelines), connector
    assert config["service"]["extensions"] == list(config["extensions"]) == ["health_check"]


def test_the_collector_tail_samples_errors_slow_traces_and_a_configurable_share() -> None:
    sampling = _yaml(COLLECTOR)["processors"]["tail_sampling"]
    policies = {policy["type"]: policy for policy in sampling["policies"]}
    assert set(policies) == {"status_code", "latency", "probabilistic"}
    assert policies["status_code"]["status_code"]["status_codes"] == ["ERROR"]
    threshold = policies["latency"]["latency"]["threshold_ms"]
    share = policies["probabilistic"]["probabilistic"]["sampling_percentage"]
    assert ENV_REFERENCE.fullmatch(threshold), "set from the environment"
    assert ENV_REFERENCE.fullmatch(share), "set from the environment"
    assert _with_defaults(threshold) == 2000
    assert _with_defaults(share) == 10


def test_the_collector_reads_only_variables_compose_passes_with_the_same_defaults() -> None:
    references = [match for value in _strings(_yaml(COLLECTOR)) for match in ENV_REFERENCE.finditer(value)]
    unparsed = [value for value in _strings(_yaml(COLLECTOR)) if "${" in value and not ENV_REFERENCE.search(value)]
    assert references
    assert not unparsed, "not in the ${env:NAME:-default} form"
    environment = _services()["otel-collector"]["environment"]
    for reference in references:
        name, default = reference.group(1), reference.group(2)
        assert default is not None, f"{name} has a default in otel-collector.yaml"
        assert environment[name] == f"${{{name}:-{default}}}", f"compose passes {name} with the same default"


def test_the_collector_listens_where_the_api_sends_and_exports_where_tempo_and_loki_listen() -> None:
    config = _yaml(COLLECTOR)
    protocols = config["receivers"]["otlp"]["protocols"]
    assert _host_port(protocols["grpc"]["endpoint"]) == (ANY_INTERFACE, 4317)
    assert _host_port(protocols["http"]["endpoint"]) == (ANY_INTERFACE, 4318)
    tempo_receiver = _yaml(TEMPO)["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert _host_port(tempo_receiver)[0] == ANY_INTERFACE, "Tempo accepts OTLP from other containers"
    assert _host_port(config["exporters"]["otlp/tempo"]["endpoint"]) == ("tempo", _host_port(tempo_receiver)[1])
    loki = urlsplit(config["exporters"]["otlphttp/loki"]["endpoint"])
    assert (loki.hostname, loki.port, loki.path) == ("loki", _listen_port("loki"), "/otlp")
    exporter = config["exporters"]["prometheus"]
    assert exporter["enable_open_metrics"] is True, "exemplars are only written in OpenMetrics"
    assert exporter["resource_to_telemetry_conversion"]["enabled"] is True
    assert config["service"]["pipelines"]["metrics"]["exporters"] == ["prometheus"]


def test_the_collector_waits_for_its_backends_and_has_a_memory_bound() -> None:
    collector = _services()["otel-collector"]
    assert {"tempo", "loki"} <= set(collector["depends_on"])
    assert _container_path("otel-collector", "./otel-collector.yaml") == "/etc/otelcol-contrib/config.yaml"
    assert collector["command"] == ["--config=/etc/otelcol-contrib/config.yaml"]
    limit_mib = _yaml(COLLECTOR)["processors"]["memory_limiter"]["limit_mib"]
    assert collector["mem_limit"] == "512m"
    assert limit_mib < 512


# --- Prometheus -----------------------------------------------------------------------------------------------


def test_prometheus_scrapes_compose_services_at_the_ports_they_serve() -> None:
    services = _services()
    collector_ports = {"ragwatch-otlp": _collector_exporter_port(), "otel-collector": _collector_telemetry_port()}
    for job, targets in _prometheus_targets().items():
        for target in targets:
            host, port = _host_port(target)
            if job == "prometheus":
                assert (host, port) == ("localhost", _listen_port("prometheus"))
            elif host == "otel-collector":
                assert port == collector_ports[job], target
            else:
                assert host in services, f"{job}: {host} is no compose service"
                assert port == _listen_port(host), target
    assert {"ragwatch", "ragwatch-otlp", "otel-collector", "prometheus", "alertmanager"} <= set(_prometheus_targets())


def test_ragwatch_metrics_come_from_the_collector_and_the_api_scrape_keeps_only_up() -> None:
    targets = _prometheus_targets()
    assert targets["ragwatch"] == [f"api:{_listen_port('api')}"]
    direct = _prometheus_job("ragwatch")
    assert direct.get("metrics_path", "/metrics") == "/metrics"
    assert direct["metric_relabel_configs"] == [{"source_labels": ["__name__"], "regex": ".+", "action": "drop"}]
    assert not direct.get("honor_labels")
    assert targets["ragwatch-otlp"] == [f"otel-collector:{_collector_exporter_port()}"]
    assert _prometheus_job("ragwatch-otlp")["honor_labels"] is True, "series keep job=<service.name>"
    scraped_twice = [job for job, found in targets.items() for target in found if target.startswith("api:")]
    assert scraped_twice == ["ragwatch"]


def test_prometheus_loads_the_mounted_rules_and_alerts_the_compose_alertmanager() -> None:
    config = _yaml(PROMETHEUS)
    rules_dir = _container_path("prometheus", "./alerts/rules")
    assert config["rule_files"] == [f"{rules_dir}/*.yml"]
    assert _container_path("prometheus", "./stack/prometheus.yml") == _flags("prometheus")["--config.file"]
    [alertmanagers] = config["alerting"]["alertmanagers"]
    assert [target for group in alertmanagers["static_configs"] for target in group["targets"]] == [
        f"alertmanager:{_listen_port('alertmanager')}"
    ]
    config_file = _flags("alertmanager")["--config.file"]
    assert _container_path("alertmanager", "./alerts/alertmanager.yml") == config_file
    assert _container_path("alertmanager", "./secrets/alertmanager") == "/etc/alertmanager/secrets"


def test_prometheus_runs_with_exemplar_storage() -> None:
    assert "--enable-feature=exemplar-storage" in _services()["prometheus"]["command"]
    assert _flags("prometheus")["--storage.tsdb.path"] == _container_path("prometheus", "prometheus-data")


def _checkable_prometheus_config(tmp_path: Path) -> Path:
    """prometheus.yml with its rule files read from the repository rather than the container's mount."""
    config = _yaml(PROMETHEUS)
    rules_dir = _container_path("prometheus", "./alerts/rules")
    repository_rules = ROOT / "alerts" / "rules"
    config["rule_files"] = [str(repository_rules / Path(path).relative_to(rules_dir)) for path in config["rule_files"]]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_promtool_accepts_the_prometheus_configuration(tmp_path: Path) -> None:
    result = subprocess.run(
        ["promtool", "check", "config", str(_checkable_prometheus_config(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# A stand-in for the collector's prometheus exporter: OpenMetrics, labels from the resource, an exemplar.
EXPORTER_INSTANCE = "0b9d5f34-6a51-4d49-9a7e-3c9e4d1f2a60"
EXEMPLAR_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
_CHAT = f'job="ragwatch",instance="{EXPORTER_INSTANCE}",deployment_environment_name="local",endpoint="/v1/chat"'
_EXEMPLAR = f'# {{trace_id="{EXEMPLAR_TRACE}",span_id="00f067aa0ba902b7"}} 0.42'
EXPORTER_PAGE = "\n".join(
    [
        "# TYPE rag_request_duration_seconds histogram",
        f'rag_request_duration_seconds_bucket{{{_CHAT},le="1.0"}} 3 {_EXEMPLAR}',
        f'rag_request_duration_seconds_bucket{{{_CHAT},le="+Inf"}} 4',
        f"rag_request_duration_seconds_sum{{{_CHAT}}} 3.1",
        f"rag_request_duration_seconds_count{{{_CHAT}}} 4",
        "# TYPE rag_requests counter",
        f'rag_requests_total{{{_CHAT},status="200"}} 4',
        "# EOF",
        "",
    ]
)


class _ExporterPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = EXPORTER_PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


def _stack_scrape_config(targets: dict[str, str]) -> dict[str, Any]:
    """The stack's scrape jobs for the ragwatch API and the collector's exporter, pointed at local targets."""
    jobs = []
    for name, target in targets.items():
        job = _prometheus_job(name)
        job["static_configs"] = [{"targets": [target]}]
        jobs.append(job)
    return {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"}, "scrape_configs": jobs}


def _query(client: httpx.Client, expression: str) -> list[dict[str, Any]]:
    response = client.get("/api/v1/query", params={"query": expression})
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def _wait_for(client: httpx.Client, expression: str, count: int, log: Path) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            result = _query(client, expression)
            if len(result) >= count:
                return result
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"no {expression} after 60 s; prometheus said:\n{log.read_text()[-3000:]}")


def test_prometheus_keeps_up_for_the_api_and_each_collector_series_once_with_its_exemplars(
    server: LiveServer, tmp_path: Path
) -> None:
    with server.client() as api:
        assert api.get("/health/ready").status_code == 200  # something on the page to drop
    exporter = ThreadingHTTPServer(("127.0.0.1", 0), _ExporterPage)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    api_target = f"127.0.0.1:{server.port}"
    targets = {"ragwatch": api_target, "ragwatch-otlp": f"127.0.0.1:{exporter.server_address[1]}"}
    features = [flag for flag in _services()["prometheus"]["command"] if flag.startswith("--enable-feature=")]
    log = tmp_path / "prometheus" / "prometheus.log"
    try:
        with (
            prometheus(tmp_path / "prometheus", _stack_scrape_config(targets), features) as scraper,
            httpx.Client(base_url=scraper.url, timeout=5) as client,
        ):
            up = _wait_for(client, 'up{job="ragwatch"} == 1', 1, log)
            assert [series["metric"]["instance"] for series in up] == [api_target]
            _wait_for(client, "rag_requests_total", 1, log)
            scraped = _query(client, f'scrape_samples_scraped{{instance="{api_target}"}}')
            assert float(scraped[0]["value"][1]) > 0, "the API's page was read..."
            kept = _query(client, f'scrape_samples_post_metric_relabeling{{instance="{api_target}"}}')
            assert float(kept[0]["value"][1]) == 0, "...and none of its samples kept"
            names = {series["metric"]["__name__"] for series in _query(client, f'{{instance="{api_target}"}}')}
            assert all(name == "up" or name.startswith("scrape_") for name in names), names
            [requests] = _query(client, "rag_requests_total")
            assert requests["metric"]["job"] == "ragwatch", "honor_labels keeps the exporter's job"
            assert requests["metric"]["instance"] == EXPORTER_INSTANCE
            assert requests["metric"]["deployment_environment_name"] == "local"
            now = time.time()
            response = client.get(
                "/api/v1/query_exemplars",
                params={"query": "rag_request_duration_seconds_bucket", "start": now - 300, "end": now + 60},
            )
            response.raise_for_status()
            exemplars = [item for group in response.json()["data"] for item in group["exemplars"]]
            assert {item["labels"]["trace_id"] for item in exemplars} == {EXEMPLAR_TRACE}
    finally:
        exporter.shutdown()
        exporter.server_close()


# --- Tempo and Loki -------------------------------------------------------------------------------------------


def test_tempo_and_loki_read_their_mounted_config_and_keep_data_on_their_volumes() -> None:
    tempo = _yaml(TEMPO)
    tempo_config = _container_path("tempo", "./stack/tempo.yaml")
    assert _services()["tempo"]["command"] == [f"-config.file={tempo_config}"]
    tempo_data = _container_path("tempo", "tempo-data")
    for path in (tempo["storage"]["trace"]["wal"]["path"], tempo["storage"]["trace"]["local"]["path"]):
        assert path.startswith(f"{tempo_data}/"), path
    loki = _yaml(LOKI)
    loki_config = _container_path("loki", "./stack/loki.yaml")
    assert _services()["loki"]["command"] == [f"-config.file={loki_config}"]
    loki_data = _container_path("loki", "loki-data")
    storage = loki["common"]["storage"]["filesystem"]
    for path in (loki["common"]["path_prefix"], *storage.values(), loki["compactor"]["working_directory"]):
        assert path == loki_data or path.startswith(f"{loki_data}/"), path


def test_loki_accepts_otlp_logs_with_their_attributes_as_structured_metadata() -> None:
    loki = _yaml(LOKI)
    assert loki["limits_config"]["allow_structured_metadata"] is True
    assert {(entry["store"], entry["schema"]) for entry in loki["schema_config"]["configs"]} == {("tsdb", "v13")}
    assert loki["auth_enabled"] is False, "one tenant: the collector sends no X-Scope-OrgID"


# --- Grafana --------------------------------------------------------------------------------------------------


def _datasources() -> dict[str, dict[str, Any]]:
    return {source["uid"]: source for source in _yaml(DATASOURCES)["datasources"]}


def _linked_uids(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasourceUid":
                yield value
            else:
                yield from _linked_uids(value)
    elif isinstance(node, list):
        for value in node:
            yield from _linked_uids(value)


def test_grafana_data_sources_point_at_the_stack_services_and_link_to_each_other() -> None:
    sources = _datasources()
    assert {uid: source["type"] for uid, source in sources.items()} == {
        "prometheus": "prometheus",
        "tempo": "tempo",
        "loki": "loki",
    }
    for uid, source in sources.items():
        assert _host_port(source["url"]) == (uid, _listen_port(uid)), source["url"]
        assert set(_linked_uids(source)) <= set(sources), uid
    prometheus, tempo, loki = (sources[uid]["jsonData"] for uid in ("prometheus", "tempo", "loki"))
    assert prometheus["exemplarTraceIdDestinations"] == [
        {"name": "trace_id", "datasourceUid": "tempo", "urlDisplayLabel": "View trace"}
    ]
    assert prometheus["timeInterval"] == _yaml(PROMETHEUS)["global"]["scrape_interval"]
    assert tempo["tracesToLogsV2"]["datasourceUid"] == "loki"
    assert 'trace_id="$${__trace.traceId}"' in tempo["tracesToLogsV2"]["query"], "OTLP logs: structured metadata"
    assert tempo["tracesToMetrics"]["datasourceUid"] == "prometheus"
    assert tempo["serviceMap"]["datasourceUid"] == "prometheus"
    [derived] = loki["derivedFields"]
    assert (derived["name"], derived["matcherType"], derived["matcherRegex"]) == ("trace_id", "label", "trace_id")
    assert derived["datasourceUid"] == "tempo"
    assert [uid for uid, source in sources.items() if source.get("isDefault")] == ["prometheus"]


def test_grafana_template_variables_survive_the_provisioning_environment_expansion() -> None:
    """Grafana replaces $NAME and ${NAME} in provisioning files from its environment; $$ stands for a `$`."""
    text = DATASOURCES.read_text()
    data = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    single = re.findall(r"(?<!\$)\$(?!\$)\{?\w+", data)
    assert not single, f"these would be read from Grafana's environment: {single}"
    assert "$$" in data


def test_grafana_provisions_the_repository_dashboards_and_data_sources() -> None:
    [provider] = _yaml(DASHBOARD_PROVIDERS)["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == _container_path("grafana", "./dashboards")
    assert provider["allowUiUpdates"] is False
    assert (
        _container_path("grafana", "./dashboards/provisioning/datasources") == "/etc/grafana/provisioning/datasources"
    )
    assert _container_path("grafana", "./dashboards/provisioning/dashboards") == "/etc/grafana/provisioning/dashboards"


def test_grafana_lets_anonymous_visitors_view_only() -> None:
    grafana = _services()["grafana"]
    environment = grafana["environment"]
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert environment["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in environment
    assert environment["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana-admin-password"
    assert _compose()["secrets"]["grafana-admin-password"]["file"].startswith("./secrets/")
    assert {"prometheus", "tempo", "loki"} <= set(grafana["depends_on"])


# --- make stack -----------------------------------------------------------------------------------------------


def test_make_stack_starts_the_compose_file_and_prints_the_published_urls() -> None:
    result = subprocess.run(["make", "--dry-run", "stack"], cwd=ROOT, capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    assert "docker compose up -d" in lines
    printed = " ".join(line for line in lines if line.startswith("echo"))
    services = _services()
    for name in ("grafana", "prometheus", "alertmanager", "api"):
        host_port = str(services[name]["ports"][0]).rsplit(":", 1)[0]
        address = host_port if ":" in host_port else f"127.0.0.1:{host_port}"
        assert f"http://{address}" in printed, name
    phony = re.search(r"^\.PHONY:(.*)$", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)
    assert phony is not None
    assert "stack" in shlex.split(phony.group(1))


def test_every_hostname_in_the_collector_prometheus_and_grafana_files_is_a_compose_service() -> None:
    services = set(_services()) | {"localhost"}
    for path in (COLLECTOR, PROMETHEUS, DATASOURCES):
        for value in _strings(_yaml(path)):
            for host in re.findall(r"(?:https?://|^)([a-z][a-z0-9-]*):\d+", value):
                assert host in services, f"{path.name}: {host}"
