"""The deployment files are checked here, since no Docker engine runs where the tests do."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_the_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.Draft7Validator(schema).validate(_compose())


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
