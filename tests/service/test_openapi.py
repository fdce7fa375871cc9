"""The OpenAPI 3.1 document at /schema/openapi.json describes every route, body, response and the auth scheme."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import create_app
from tests.support import LiveServer, make_settings

JsonObject = dict[str, Any]
EXPECTED_OPERATIONS = {
    ("get", "/v1/knowledge-bases"),
    ("post", "/v1/knowledge-bases"),
    ("get", "/v1/knowledge-bases/{kb_id}"),
    ("delete", "/v1/knowledge-bases/{kb_id}"),
    ("get", "/v1/knowledge-bases/{kb_id}/documents"),
    ("post", "/v1/knowledge-bases/{kb_id}/documents"),
    ("get", "/v1/knowledge-bases/{kb_id}/documents/{document_id}"),
    ("delete", "/v1/knowledge-bases/{kb_id}/documents/{document_id}"),
    ("post", "/v1/chat"),
    ("get", "/health/live"),
    ("get", "/health/ready"),
}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


@pytest.fixture(scope="module")
def spec(server: LiveServer) -> JsonObject:
    with httpx.Client(base_url=server.url) as client:
        response = client.get("/schema/openapi.json")
    assert response.status_code == 200, response.text
    document: JsonObject = response.json()
    return document


def operations(spec: JsonObject) -> Iterator[tuple[str, str, JsonObject]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield method, path, operation


def resolve(spec: JsonObject, ref: str) -> JsonObject:
    assert ref.startswith("#/components/schemas/"), ref
    schemas: JsonObject = spec["components"]["schemas"]
    name = ref.removeprefix("#/components/schemas/")
    assert name in schemas, f"dangling reference {ref}"
    schema: JsonObject = schemas[name]
    return schema


def referenced_model(spec: JsonObject, schema: JsonObject) -> str:
    """The model a schema points at, directly or as the items of an array; fails on inline schemas."""
    target = schema["items"] if schema.get("type") == "array" else schema
    assert "$ref" in target, f"inline schema instead of a model: {schema}"
    resolve(spec, target["$ref"])
    return str(target["$ref"]).rsplit("/", 1)[-1]


def test_the_document_is_openapi_3_1_and_needs_no_token(spec: JsonObject) -> None:
    assert spec["openapi"].startswith("3.1")
    assert spec["info"]["title"] == "ragwatch"
    assert spec["info"]["version"]


def test_every_route_and_method_is_documented(spec: JsonObject) -> None:
    documented = {(method, path) for method, path, _ in operations(spec)}

    assert documented >= EXPECTED_OPERATIONS


def test_every_route_the_app_serves_is_documented(spec: JsonObject, tmp_path: Path) -> None:
    """Compared with the app's own routing table, so a route added later cannot go undocumented."""
    app = create_app(make_settings(tmp_path))
    served = {
        (method.lower(), route.path.replace(":str", ""))
        for route in app.routes
        if not route.path.startswith("/schema")
        for method in getattr(route, "methods", ())
        if method not in {"HEAD", "OPTIONS"}
    }
    documented = {(method, path) for method, path, _ in operations(spec)}

    assert served == documented
    assert served >= EXPECTED_OPERATIONS


def test_json_request_bodies_reference_their_models(spec: JsonObject) -> None:
    paths = spec["paths"]
    expected = {
        ("/v1/knowledge-bases", "post"): "KnowledgeBaseCreate",
        ("/v1/knowledge-bases/{kb_id}/documents", "post"): "DocumentCreate",
        ("/v1/chat", "post"): "ChatRequest",
    }
    for (path, method), model in expected.items():
        body = paths[path][method]["requestBody"]
        assert referenced_model(spec, body["content"]["application/json"]["schema"]) == model, (path, method)


def test_the_ingest_route_takes_json_or_a_multipart_file(spec: JsonObject) -> None:
    body = spec["paths"]["/v1/knowledge-bases/{kb_id}/documents"]["post"]["requestBody"]

    assert body["required"] is True
    assert set(body["content"]) == {"application/json", "multipart/form-data"}
    document = resolve(spec, body["content"]["application/json"]["schema"]["$ref"])
    assert set(document["required"]) == {"title", "text"}
    assert set(document["properties"]) == {"title", "text", "metadata", "id"}
    upload = body["content"]["multipart/form-data"]["schema"]
    assert upload["required"] == ["file"]
    assert upload["properties"]["file"] == {
        "type": "string",
        "format": "binary",
        "description": "PDF, DOCX, HTML, Markdown or plain text (detected from the content)",
    }
    assert set(upload["properties"]) == {"file", "title", "metadata", "id"}


def test_successful_responses_reference_their_models(spec: JsonObject) -> None:
    expected = {
        ("get", "/v1/knowledge-bases"): ("200", "KnowledgeBasePage"),
        ("post", "/v1/knowledge-bases"): ("201", "KnowledgeBase"),
        ("get", "/v1/knowledge-bases/{kb_id}"): ("200", "KnowledgeBaseDetail"),
        ("get", "/v1/knowledge-bases/{kb_id}/documents"): ("200", "DocumentPage"),
        ("post", "/v1/knowledge-bases/{kb_id}/documents"): ("201", "DocumentCreated"),
        ("get", "/v1/knowledge-bases/{kb_id}/documents/{document_id}"): ("200", "DocumentDetail"),
        ("post", "/v1/chat"): ("200", "ChatResponse"),
        ("get", "/v1/conversations/{conversation_id}"): ("200", "Conversation"),
        ("get", "/health/live"): ("200", "HealthCheck"),
        ("get", "/health/ready"): ("200", "Readiness"),
    }
    for (method, path), (status, model) in expected.items():
        response = spec["paths"][path][method]["responses"][status]
        assert referenced_model(spec, response["content"]["application/json"]["schema"]) == model, (method, path)


def test_deletes_answer_204_without_a_body(spec: JsonObject) -> None:
    for path in ("/v1/knowledge-bases/{kb_id}", "/v1/knowledge-bases/{kb_id}/documents/{document_id}"):
        responses = spec["paths"][path]["delete"]["responses"]
        assert "204" in responses
        assert not responses["204"].get("content")


def test_answers_that_can_stream_document_their_event_stream_beside_json(spec: JsonObject) -> None:
    """Found by fuzzing: a streamed answer was ``text/event-stream`` where the document promised JSON only."""
    for path in ("/v1/chat", "/v1/chat/completions"):
        content = spec["paths"][path]["post"]["responses"]["200"]["content"]
        assert set(content) == {"application/json", "text/event-stream"}, path
        event = content["text/event-stream"]["schema"]
        assert event["type"] == "object"
        assert event["required"] == ["data"]
        assert set(event["properties"]) == {"event", "data"}


def test_metrics_are_documented_as_the_prometheus_text_format(spec: JsonObject) -> None:
    """Found by fuzzing: ``/metrics`` was documented as JSON."""
    content = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]

    assert [media_type.split(";")[0] for media_type in content] == ["text/plain"]
    assert content[next(iter(content))]["schema"] == {"type": "string"}


def test_readiness_documents_its_503(spec: JsonObject) -> None:
    response = spec["paths"]["/health/ready"]["get"]["responses"]["503"]

    assert referenced_model(spec, response["content"]["application/json"]["schema"]) == "Readiness"


def test_knowledge_base_and_document_errors_are_documented_as_problems(spec: JsonObject) -> None:
    problem = spec["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    for method, path, operation in operations(spec):
        if not path.startswith("/v1/knowledge-bases"):
            continue
        errors = {status: r for status, r in operation["responses"].items() if status.startswith("4")}
        assert {"401", "403"} <= set(errors), (method, path)
        for status, response in errors.items():
            schema = response["content"]["application/problem+json"]["schema"]
            assert referenced_model(spec, schema) == "Problem", (method, path, status)


def test_every_reference_resolves(spec: JsonObject) -> None:
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    references = set(walk(spec))

    assert references
    for ref in references:
        resolve(spec, ref)


def test_path_parameters_are_declared(spec: JsonObject) -> None:
    for method, path, operation in operations(spec):
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        expected = {segment[1:-1] for segment in path.split("/") if segment.startswith("{")}
        assert declared == expected, (method, path)


def test_a_bearer_scheme_guards_every_v1_operation_and_no_health_probe(spec: JsonObject) -> None:
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    for method, path, operation in operations(spec):
        if path.startswith("/v1/"):
            assert operation.get("security") == [{"bearer": []}], (method, path)
        else:
            assert not operation.get("security"), (method, path)
