"""Fuzzing: schemathesis drives the running app from its own OpenAPI document and finds nothing wrong.

Whatever it sends (schema-valid and schema-violating requests, boundary values, call sequences along the
document's links), the app never answers 5xx nor hangs, answers with a documented status, content type, headers
and body schema, keeps what it created available until deleted and gone once deleted, never ignores the token,
never shows what one tenant reads to an admin of another, and explains every 4xx with an RFC 9457 problem. The
requests carry an admin token of a tenant whose knowledge base, document, probe and conversation exist, and
generated ids are often these real ones, so requests reach past the 404s.

schemathesis runs as its command line (``schemathesis run``, in a process of its own) against a real server:
that runs every phase (examples, coverage, fuzzing, stateful) and reports each failure with a ``curl`` line to
reproduce it. This module is also the hooks module that process loads (``SCHEMATHESIS_HOOKS``): the hooks bind
real ids, add what the document leaves out (links, closed request models) and check problems. It imports the
app's test helpers only where a test uses them, so that process starts in a second.

``make test`` runs a small budget (``FUZZ_EXAMPLES`` cases per operation and phase, default 8); ``make fuzz`` a
large one (``FUZZ_EXAMPLES``, ``FUZZ_SECONDS``, ``FUZZ_WORKERS``). ``FUZZ_SEED`` replays a run whose seed a
failure printed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import schemathesis

if TYPE_CHECKING:
    from tests.support import LiveServer

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "8"))
"""Test cases per operation in each phase, and stateful scenarios; ``make fuzz`` raises it."""
SECONDS = os.environ.get("FUZZ_SECONDS", "")
"""When set, fuzzing and stateful testing go on until this many seconds have passed (``make fuzz``)."""
WORKERS = os.environ.get("FUZZ_WORKERS", "1")
"""Requests in flight at once: more than one also looks for races (``make fuzz`` runs two)."""
SEED = os.environ.get("FUZZ_SEED", "")
"""A run's seed (its report ends with it) replays that run; unset, every run explores anew."""
REQUEST_TIMEOUT_S = 15
"""A request unanswered this long is a hang, and fails the run."""
IDS_VARIABLE = "FUZZ_TARGET_IDS"
"""How the test hands the real ids to the hooks in the schemathesis process (JSON)."""
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "use_after_free",
    "ensure_resource_availability",
    "ignored_auth",
    "object_level_authorization",
    "missing_required_header",
    "unsupported_method",
    "problem_details_on_client_errors",
]
"""Every check but three, each for a reason of its own:

``positive_data_acceptance`` and ``negative_data_rejection``: the document's request schemas are looser than
the validation (unknown fields, ids in paths, a probe expecting nothing, page cursors are all refused with a
400 problem the document lists, but the schemas Litestar derives do not say so), so these would report the
document's imprecision, not the app's behaviour. ``allow_header_conformance``: Litestar's automatic ``OPTIONS``
answer lists the methods of one handler of a path only (``GET, OPTIONS`` where ``DELETE`` is also served).
"""
OPENAI_PATHS = ("/v1/chat/completions", "/v1/models")
"""The OpenAI-compatible routes answer errors in OpenAI's shape (``{"error": ...}``), not as problems."""
PROBLEM_BASE = "https://ragwatch.dev/problems/"


# --- the hooks of the schemathesis process --------------------------------------------------------------


def real_ids() -> dict[str, str]:
    ids: dict[str, str] = json.loads(os.environ[IDS_VARIABLE])
    return ids


def with_real_ids(values: Any, ids: dict[str, str]) -> Any:
    """``values`` as generated or, for about half of the generated values (chosen by their own checksum, so a
    seed replays the same choices), with every field named like a real resource set to that resource's id."""
    if not isinstance(values, dict) or zlib.crc32(repr(sorted(values.items(), key=str)).encode()) % 2:
        return values
    return {name: ids.get(name, value) for name, value in values.items()}


def bindable(context: schemathesis.HookContext) -> bool:
    """Real ids go everywhere but into deletes: a deleted knowledge base would turn every later case into a 404.
    Deleting what exists is the stateful phase's, which creates what it deletes."""
    return context.operation is None or context.operation.method.upper() != "DELETE"


def operation_ids(raw_schema: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {
        (method.upper(), path): operation["operationId"]
        for path, item in raw_schema["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "operationId" in operation
    }


KB = "/v1/knowledge-bases/{kb_id}"
NEW_KB = {"kb_id": "$response.body#/id"}
SAME_KB = {"kb_id": "$request.path.kb_id"}
LINKS: dict[tuple[str, str, str], list[tuple[str, str, dict[str, str]]]] = {
    ("POST", "/v1/knowledge-bases", "201"): [
        ("GET", KB, NEW_KB),
        ("DELETE", KB, NEW_KB),
        *((method, f"{KB}/{tail}", NEW_KB) for method, tail in [("GET", "documents"), ("POST", "documents")]),
        *((method, f"{KB}/{tail}", NEW_KB) for method, tail in [("GET", "probes"), ("POST", "probes")]),
        *(("POST", f"{KB}/{tail}", NEW_KB) for tail in ["search", "reindex"]),
    ],
    ("POST", f"{KB}/documents", "201"): [
        (method, f"{KB}/documents/{{document_id}}", {**SAME_KB, "document_id": "$response.body#/document_id"})
        for method in ("GET", "DELETE")
    ],
    ("POST", f"{KB}/probes", "201"): [
        ("DELETE", f"{KB}/probes/{{probe_id}}", {**SAME_KB, "probe_id": "$response.body#/id"})
    ],
    ("POST", "/v1/chat", "200"): [
        (method, "/v1/conversations/{conversation_id}", {"conversation_id": "$response.body#/conversation_id"})
        for method in ("GET", "DELETE")
    ],
}
"""The document's links for the stateful phase: what a created resource leads to (schemathesis infers some of
these itself, not all, and not from the command line every time)."""


def add_links(raw_schema: dict[str, Any]) -> None:
    ids = operation_ids(raw_schema)
    for (method, path, status), targets in LINKS.items():
        response = raw_schema["paths"][path][method.lower()]["responses"][status]
        for target_method, target_path, parameters in targets:
            target = ids[target_method, target_path]
            response.setdefault("links", {})[target] = {"operationId": target, "parameters": parameters}


CLOSED_MODELS = {
    "ChatRequest",
    "DocumentCreate",
    "FeedbackCreate",
    "KnowledgeBaseCreate",
    "ProbeCreate",
    "ProbeExpectation",
    "SearchRequest",
}
"""The request models that refuse unknown fields (msgspec's ``forbid_unknown_fields``), which the schemas Litestar
derives do not say: told, the fuzzer sends them as schema-violating cases rather than in most valid ones."""


def close_models(raw_schema: dict[str, Any]) -> None:
    for name in CLOSED_MODELS:
        raw_schema["components"]["schemas"][name]["additionalProperties"] = False


def assert_problem_on_client_error(path: str, status: int, content_type: str, body: bytes) -> None:
    """A 4xx outside the OpenAI-compatible routes is an RFC 9457 problem of its own status."""
    if not 400 <= status < 500 or path.startswith(OPENAI_PATHS):
        return
    assert content_type.startswith("application/problem+json"), f"a {status} of type {content_type!r}"
    problem = json.loads(body)
    assert problem["status"] == status, problem
    assert str(problem["type"]).startswith(PROBLEM_BASE), problem
    assert problem["title"], problem


def register_hooks() -> None:
    ids = real_ids()

    @schemathesis.hook
    def before_load_schema(context: schemathesis.HookContext, raw_schema: dict[str, Any]) -> None:
        add_links(raw_schema)
        close_models(raw_schema)

    @schemathesis.hook
    def map_path_parameters(context: schemathesis.HookContext, path_parameters: Any) -> Any:
        return with_real_ids(path_parameters, ids) if bindable(context) else path_parameters

    @schemathesis.hook
    def map_body(context: schemathesis.HookContext, body: Any) -> Any:
        return with_real_ids(body, ids)

    @schemathesis.hook
    def map_headers(context: schemathesis.HookContext, headers: dict[str, Any] | None) -> dict[str, Any] | None:
        """A fresh ``Idempotency-Key`` each time: a key generated twice would replay the first creation, whose
        resource the stateful phase may have deleted since (the replay is right; the check would not know)."""
        if headers and isinstance(headers.get("Idempotency-Key"), str):
            return {**headers, "Idempotency-Key": f"{headers['Idempotency-Key']}{uuid.uuid4().hex}"}
        return headers

    @schemathesis.check
    def problem_details_on_client_errors(
        ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
    ) -> bool | None:
        content_type = response.headers.get("content-type", [""])[0]
        assert_problem_on_client_error(case.path, response.status_code, content_type, response.content)
        return None


if os.environ.get(IDS_VARIABLE):
    register_hooks()


# --- the test -------------------------------------------------------------------------------------------


class Target:
    """The running app and a tenant's real resources: a knowledge base with a document, a probe, a
    conversation and the trace id of an answer."""

    def __init__(self, server: LiveServer, tenant: str) -> None:
        from tests.support import HANDBOOK, auth, create_kb, ingest

        self.server = server
        self.token = auth(tenant, "fuzzer", ("admin", "member"))["Authorization"]
        self.intruder_token = auth(f"{tenant}-other", "intruder", ("admin", "member"))["Authorization"]
        with server.client({"Authorization": self.token}) as client:
            kb_id = create_kb(client, "fuzzed")
            document_id = str(ingest(client, kb_id, title="Handbook", text=HANDBOOK)["document_id"])
            question = {"kb_id": kb_id, "question": "How many vacation days?", "conversation_id": "fuzzed"}
            answered = client.post("/v1/chat", json=question)
            assert answered.status_code == 200, answered.text
            probe = {"question": "How many vacation days?", "expect": {"document_id": document_id}}
            created = client.post(f"/v1/knowledge-bases/{kb_id}/probes", json=probe)
            assert created.status_code == 201, created.text
        self.ids = {
            "kb_id": kb_id,
            "model": kb_id,  # the OpenAI-compatible routes name the knowledge base as the model
            "document_id": document_id,
            "conversation_id": "fuzzed",
            "probe_id": str(created.json()["id"]),
            "trace_id": str(answered.json()["trace_id"]),
        }


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    from tests.support import fresh_tenant, live_server, make_settings

    with live_server(make_settings(tmp_path_factory.mktemp("fuzz"))) as server:
        yield Target(server, fresh_tenant())


def write_users(target: Target, workdir: Path) -> Path:
    """The requests' user and, as its peer, an admin of another tenant: every object the first reads, the other
    must not (schemathesis replays the reads as the peer: its ``object_level_authorization`` check)."""
    users = [("owner", target.token), ("intruder", target.intruder_token)]
    auth = {
        "auth": [{"name": name, "fixedHeaders": [{"name": "Authorization", "value": value}]} for name, value in users]
    }
    (workdir / "users.json").write_text(json.dumps(auth))
    config = workdir / "schemathesis.toml"
    config.write_text('[auth.wfc]\npath = "users.json"\nuser = "owner"\npeers = ["owner", "intruder"]\n')
    return config


def schemathesis_run(target: Target, workdir: Path) -> subprocess.CompletedProcess[str]:
    budget = ["--max-examples", str(EXAMPLES), *(["--max-time", SECONDS] if SECONDS else [])]
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(write_users(target, workdir))),
        *("run", f"{target.server.url}/schema/openapi.json"),
        *("--checks", ",".join(CHECKS)),
        *budget,
        *(["--seed", SEED] if SEED else []),
        *("--request-timeout", str(REQUEST_TIMEOUT_S)),
        *("--workers", WORKERS, "--generation-database", "none", "--suppress-health-check", "all"),
        "--no-color",
    ]
    root = Path(__file__).resolve().parents[2]
    environment = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": __name__,
        IDS_VARIABLE: json.dumps(target.ids),
        "PYTHONPATH": str(root),
    }
    return subprocess.run(command, cwd=workdir, env=environment, capture_output=True, text=True, check=False)


def test_fuzzing_finds_no_server_error_hang_undocumented_answer_or_error_that_is_not_a_problem(
    target: Target, tmp_path: Path
) -> None:
    run = schemathesis_run(target, tmp_path)
    print(run.stdout)  # the report: what was covered (``make fuzz`` shows it)

    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    operations = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", run.stdout)
    assert operations is not None, run.stdout
    assert len(set(operations.groups())) == 1, "every operation of the document was tested"
    scenarios = re.search(r"Scenarios:\s+(\d+)", run.stdout)
    assert scenarios is not None, run.stdout
    assert int(scenarios.group(1)) > 0, "the stateful phase ran along the links"


def test_about_half_of_the_generated_ids_are_the_real_ones() -> None:
    ids = {"kb_id": "kb_real", "document_id": "doc_real"}
    generated = [{"kb_id": f"kb{n}", "document_id": f"doc{n}", "other": n} for n in range(400)]

    bound = [with_real_ids(values, ids) for values in generated]

    real = [values for values in bound if values["kb_id"] == "kb_real"]
    assert 120 < len(real) < 280
    assert all(values["document_id"] == "doc_real" for values in real), "a case binds all of its ids or none"
    assert [values["other"] for values in bound] == list(range(400)), "other fields stay as generated"
    assert bound == [with_real_ids(values, ids) for values in generated], "the same values, the same choice"


def test_the_problem_check_accepts_problems_and_refuses_other_client_errors() -> None:
    """The one check of ours, tested as itself: it must fail on what it exists to catch."""
    problem = json.dumps({"type": f"{PROBLEM_BASE}not-found", "title": "No such resource", "status": 404})
    assert_problem_on_client_error("/v1/knowledge-bases/x", 404, "application/problem+json", problem.encode())
    assert_problem_on_client_error("/v1/models", 401, "application/json", b'{"error": {}}')
    assert_problem_on_client_error("/v1/knowledge-bases", 200, "application/json", b"[]")
    with pytest.raises(AssertionError):
        assert_problem_on_client_error("/v1/knowledge-bases/x", 404, "application/json", problem.encode())
    with pytest.raises(AssertionError):
        assert_problem_on_client_error("/v1/knowledge-bases/x", 400, "application/problem+json", problem.encode())


def test_the_fuzzer_knows_every_request_model_that_refuses_unknown_fields() -> None:
    import msgspec

    from service import models

    closed = {
        name
        for name, model in vars(models).items()
        if isinstance(model, type)
        and issubclass(model, msgspec.Struct)
        and model.__struct_config__.forbid_unknown_fields
    }

    assert closed == CLOSED_MODELS
