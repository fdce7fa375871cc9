"""The audit trail: every attempt at an admin action is one ``ragwatch.audit`` JSON line on stdout, naming the
caller, the action, its target, its outcome and the trace id of its response; never content nor tokens.

The server is ``ragwatch serve`` in its own process, logging as production does, at ``RAGWATCH_LOG_LEVEL=WARNING``
(audit records are written whatever the level). Each response's audit record is read as soon as the response
is in: the record is written before the response's last byte.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from service.app import create_app
from service.audit import AUDIT, AuditedAction
from tests.service.test_auth import ADMIN_OPERATIONS
from tests.support import (
    GENEROUS_LIMITS,
    PROBLEM_BASE,
    ServingProcess,
    auth,
    create_kb,
    documents_url,
    fresh_tenant,
    ingest,
    make_settings,
    serving_process,
    token,
)

ADMIN_ACTIONS = {
    ("POST", "/v1/knowledge-bases"): "knowledge_base.create",
    ("DELETE", "/v1/knowledge-bases/{kb_id}"): "knowledge_base.delete",
    ("POST", "/v1/knowledge-bases/{kb_id}/documents"): "document.ingest",
    ("DELETE", "/v1/knowledge-bases/{kb_id}/documents/{document_id}"): "document.delete",
    ("POST", "/v1/knowledge-bases/{kb_id}/reindex"): "knowledge_base.reindex",
    ("POST", "/v1/knowledge-bases/{kb_id}/probes"): "probe.create",
    ("DELETE", "/v1/knowledge-bases/{kb_id}/probes/{probe_id}"): "probe.delete",
}
PARKING = "Visitors park in the north garage on level two."
PROBE = {"question": "Where do visitors park?", "expect": {"contains": "north garage"}}


class AuditLog:
    """The ``ragwatch.audit`` lines a serving process wrote to stdout."""

    def __init__(self, served: ServingProcess) -> None:
        self._served = served

    def lines(self) -> list[str]:
        return [line for line in self._served.output().splitlines() if '"event.name":"ragwatch.audit"' in line]

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]

    def of(self, response: httpx.Response) -> list[dict[str, Any]]:
        """The records in the trace the response's ``traceresponse`` header names."""
        trace_id = response.headers["traceresponse"].split("-")[1]
        return [record for record in self.records() if record.get("trace_id") == trace_id]

    def one(self, response: httpx.Response) -> dict[str, Any]:
        [record] = self.of(response)
        return record


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingProcess]:
    data_dir = tmp_path_factory.mktemp("audited")
    with serving_process(data_dir, RAGWATCH_LOG_LEVEL="WARNING", **GENEROUS_LIMITS) as running:
        yield running


@pytest.fixture
def audit_log(served: ServingProcess) -> AuditLog:
    return AuditLog(served)


@pytest.fixture
def tenant() -> str:
    return fresh_tenant()


@pytest.fixture
def caller(served: ServingProcess, tenant: str) -> Iterator[Callable[..., httpx.Client]]:
    """``caller(user, roles)``: a client of the test's own tenant with a token for that user and roles."""
    clients: list[httpx.Client] = []

    def make(user: str = "alice", roles: tuple[str, ...] = ("admin",)) -> httpx.Client:
        client = served.client(auth(tenant, user, roles))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def admin(caller: Callable[..., httpx.Client]) -> httpx.Client:
    return caller()


def probes_url(kb_id: str) -> str:
    return f"/v1/knowledge-bases/{kb_id}/probes"


def outcome(record: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(
        record.get(name)
        for name in ("rag.audit.action", "rag.audit.outcome", "rag.audit.target.id", "error.type", "enduser.id")
    )


# --- what is audited ----------------------------------------------------------------------------------------


def test_every_admin_route_and_only_those_names_the_action_it_audits(tmp_path: Path) -> None:
    """Read from the app's routing table, against the admin routes of the permission test: an admin route
    added later without an audited action fails here."""
    app = create_app(make_settings(tmp_path))
    actions: dict[tuple[str, str], str] = {}
    for route in app.routes:
        for handler in route.route_handlers:
            action = handler.opt.get(AUDIT)
            for method in getattr(handler, "http_methods", ()):
                if isinstance(action, AuditedAction):
                    actions[(method, route.path.replace(":str", ""))] = action.name

    assert set(actions) == ADMIN_OPERATIONS
    assert actions == ADMIN_ACTIONS


def test_each_admin_action_is_one_record_of_the_caller_the_action_its_target_and_the_responses_trace(
    admin: httpx.Client, audit_log: AuditLog, tenant: str
) -> None:
    created = admin.post("/v1/knowledge-bases", json={"name": "audited"})
    kb_id = created.json()["id"]
    ingested = admin.post(documents_url(kb_id), json={"title": "Parking", "text": PARKING, "id": "parking"})
    replaced = admin.post(
        documents_url(kb_id), json={"title": "Parking", "text": PARKING + " Bikes too.", "id": "parking"}
    )
    uploaded = admin.post(documents_url(kb_id), files={"file": ("notes.md", b"# Notes\n\nLunch is at noon.\n")})
    probe = admin.post(probes_url(kb_id), json=PROBE)
    reindexed = admin.post(f"/v1/knowledge-bases/{kb_id}/reindex")
    probe_deleted = admin.delete(f"{probes_url(kb_id)}/{probe.json()['id']}")
    document_deleted = admin.delete(f"{documents_url(kb_id)}/parking")
    kb_deleted = admin.delete(f"/v1/knowledge-bases/{kb_id}")
    expected = [
        (created, "knowledge_base.create", kb_id),
        (ingested, "document.ingest", "parking"),
        (replaced, "document.replace", "parking"),
        (uploaded, "document.ingest", uploaded.json()["document_id"]),
        (probe, "probe.create", probe.json()["id"]),
        (reindexed, "knowledge_base.reindex", kb_id),
        (probe_deleted, "probe.delete", probe.json()["id"]),
        (document_deleted, "document.delete", "parking"),
        (kb_deleted, "knowledge_base.delete", kb_id),
    ]

    assert all(response.is_success for response, _, _ in expected), [r.text for r, _, _ in expected]
    records = [audit_log.one(response) for response, _, _ in expected]
    assert [outcome(record) for record in records] == [
        (action, "success", target, None, "alice") for _, action, target in expected
    ]
    for (response, _, _), record in zip(expected, records, strict=True):
        assert record["trace_id"] == response.headers["traceresponse"].split("-")[1]
        assert record["rag.tenant.id"] == tenant
        assert record["user.roles"] == ["admin"]
        assert record["http.response.status_code"] == response.status_code
        assert record["severity"] == "INFO"
        assert record["logger"] == "ragwatch.audit"
    assert records[1]["rag.kb.id"] == kb_id  # the knowledge base a document action happens in


def test_requests_that_are_not_admin_actions_write_no_audit_record(
    admin: httpx.Client, caller: Callable[..., httpx.Client], audit_log: AuditLog
) -> None:
    kb_id = create_kb(admin, "quiet")
    ingest(admin, kb_id, title="Parking", text=PARKING, id="parking")
    member = caller("bob", ("member",))

    reads = [
        admin.get("/v1/knowledge-bases"),
        admin.get(f"/v1/knowledge-bases/{kb_id}"),
        member.get(f"{documents_url(kb_id)}/parking"),
        member.post(f"/v1/knowledge-bases/{kb_id}/search", json={"query": "parking"}),
        member.post("/v1/chat", json={"kb_id": kb_id, "question": "Where do visitors park?"}),
        member.get("/health/live"),
    ]

    assert all(response.is_success for response in reads), [response.text for response in reads]
    assert [audit_log.of(response) for response in reads] == [[]] * len(reads)


def test_a_replayed_creation_is_recorded_as_a_replay_of_the_same_target(
    admin: httpx.Client, audit_log: AuditLog
) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = admin.post("/v1/knowledge-bases", json={"name": "once"}, headers=key)
    again = admin.post("/v1/knowledge-bases", json={"name": "once"}, headers=key)

    assert again.headers["idempotent-replayed"] == "true"
    original, replay = audit_log.one(first), audit_log.one(again)
    assert (
        outcome(original) == outcome(replay) == ("knowledge_base.create", "success", first.json()["id"], None, "alice")
    )
    assert "rag.audit.replayed" not in original
    assert replay["rag.audit.replayed"] is True


# --- denials and failures -----------------------------------------------------------------------------------


@pytest.fixture
def existing(admin: httpx.Client) -> dict[str, str]:
    """A knowledge base holding a document and a probe: the targets a refused caller aims at."""
    kb_id = create_kb(admin, "targets")
    ingest(admin, kb_id, title="Parking", text=PARKING, id="parking")
    probe = admin.post(probes_url(kb_id), json=PROBE)
    assert probe.status_code == 201, probe.text
    return {"kb_id": kb_id, "document_id": "parking", "probe_id": probe.json()["id"]}


BODIES: dict[str, dict[str, Any]] = {
    "/v1/knowledge-bases": {"json": {"name": "not mine to make"}},
    "/v1/knowledge-bases/{kb_id}/documents": {"json": {"title": "Parking", "text": PARKING}},
    "/v1/knowledge-bases/{kb_id}/probes": {"json": PROBE},
}
"""What a refused caller sends to each admin route that takes a body."""
OPERATIONS = sorted(ADMIN_ACTIONS)


def attempt(client: httpx.Client, operation: tuple[str, str], ids: dict[str, str]) -> httpx.Response:
    method, template = operation
    return client.request(method, template.format(**ids), **BODIES.get(template, {}))


TARGETS = {
    ("DELETE", "/v1/knowledge-bases/{kb_id}"): "kb_id",
    ("DELETE", "/v1/knowledge-bases/{kb_id}/documents/{document_id}"): "document_id",
    ("POST", "/v1/knowledge-bases/{kb_id}/reindex"): "kb_id",
    ("DELETE", "/v1/knowledge-bases/{kb_id}/probes/{probe_id}"): "probe_id",
}
"""The id a refused request's record names as its target: one from its path. A creation has none yet."""


@pytest.mark.parametrize("operation", OPERATIONS, ids=[f"{method} {path}" for method, path in OPERATIONS])
def test_a_member_attempting_an_admin_action_is_recorded_as_denied(
    caller: Callable[..., httpx.Client], existing: dict[str, str], audit_log: AuditLog, operation: tuple[str, str]
) -> None:
    member = caller("bob", ("member",))

    refused = attempt(member, operation, existing)

    assert refused.status_code == 403, refused.text
    record = audit_log.one(refused)
    target = existing[TARGETS[operation]] if operation in TARGETS else None
    assert outcome(record) == (ADMIN_ACTIONS[operation], "denied", target, "forbidden", "bob")
    assert record["user.roles"] == ["member"]
    assert record["http.response.status_code"] == 403


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": f"Bearer {token(secret_claim='x')}x"}],
    ids=["no token", "forged token"],
)
def test_a_caller_without_a_valid_token_is_recorded_as_denied_naming_no_one(
    served: ServingProcess, existing: dict[str, str], audit_log: AuditLog, headers: dict[str, str]
) -> None:
    with served.client(headers) as anonymous:
        refused = anonymous.delete(f"/v1/knowledge-bases/{existing['kb_id']}")

    assert refused.status_code == 401, refused.text
    record = audit_log.one(refused)
    assert outcome(record) == ("knowledge_base.delete", "denied", existing["kb_id"], "unauthenticated", None)
    assert "rag.tenant.id" not in record
    assert "user.roles" not in record


def _missing_kb(admin: httpx.Client, ids: dict[str, str]) -> httpx.Response:
    return admin.delete("/v1/knowledge-bases/kb_missing")


def _missing_probe(admin: httpx.Client, ids: dict[str, str]) -> httpx.Response:
    return admin.delete(f"{probes_url(ids['kb_id'])}/probe_missing")


def _malformed_json(admin: httpx.Client, ids: dict[str, str]) -> httpx.Response:
    return admin.post("/v1/knowledge-bases", content=b'{"name": ', headers={"Content-Type": "application/json"})


def _unreadable_upload(admin: httpx.Client, ids: dict[str, str]) -> httpx.Response:
    return admin.post(documents_url(ids["kb_id"]), files={"file": ("broken.pdf", b"%PDF-1.7\n garbage")})


def _reused_idempotency_key(admin: httpx.Client, ids: dict[str, str]) -> httpx.Response:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    assert admin.post("/v1/knowledge-bases", json={"name": "first"}, headers=key).status_code == 201
    return admin.post("/v1/knowledge-bases", json={"name": "second"}, headers=key)


FAILURES: dict[str, tuple[Callable[[httpx.Client, dict[str, str]], httpx.Response], str, str]] = {
    "missing knowledge base": (_missing_kb, "knowledge_base.delete", "not-found"),
    "missing probe": (_missing_probe, "probe.delete", "not-found"),
    "malformed JSON": (_malformed_json, "knowledge_base.create", "invalid-request"),
    "unreadable upload": (_unreadable_upload, "document.ingest", "unreadable-document"),
    "reused idempotency key": (_reused_idempotency_key, "knowledge_base.create", "idempotency-key-reused"),
}


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
def test_a_failed_admin_action_is_recorded_with_its_problem_type(
    admin: httpx.Client,
    existing: dict[str, str],
    audit_log: AuditLog,
    failure: tuple[Callable[[httpx.Client, dict[str, str]], httpx.Response], str, str],
) -> None:
    make_request, action, slug = failure

    failed = make_request(admin, existing)

    assert failed.json()["type"] == PROBLEM_BASE + slug, failed.text
    record = audit_log.one(failed)
    assert (record["rag.audit.action"], record["rag.audit.outcome"], record["error.type"]) == (action, "failure", slug)
    assert record["http.response.status_code"] == failed.status_code
    assert record["enduser.id"] == "alice"


def test_a_crafted_id_is_recorded_escaped_and_cut_never_as_a_line_of_its_own(
    admin: httpx.Client, audit_log: AuditLog
) -> None:
    crafted = 'kb\n{"event.name":"ragwatch.audit","rag.audit.outcome":"success"}' + "x" * 500

    refused = admin.delete("/v1/knowledge-bases/" + quote(crafted, safe=""))

    assert refused.status_code in (400, 404), refused.text
    record = audit_log.one(refused)
    assert record["rag.audit.outcome"] == "failure"
    assert record["rag.audit.target.id"].startswith("kb\\n{")
    assert len(record["rag.audit.target.id"]) <= 67
    assert all(line.startswith("{") and line.endswith("}") for line in audit_log.lines())


# --- what a record never holds ----------------------------------------------------------------------------


def test_no_audit_record_holds_document_content_questions_names_or_tokens(
    served: ServingProcess, tenant: str, audit_log: AuditLog
) -> None:
    marker = f"marker{uuid.uuid4().hex}"
    bearer = token(tenant)
    with served.client({"Authorization": f"Bearer {bearer}"}) as admin:
        responses = [created := admin.post("/v1/knowledge-bases", json={"name": marker, "description": marker})]
        kb_id = created.json()["id"]
        responses += [
            admin.post(
                documents_url(kb_id),
                json={"title": marker, "text": f"The {marker} garage.", "metadata": {"owner": marker}},
            ),
            admin.post(
                documents_url(kb_id),
                files={"file": (f"{marker}.md", f"# {marker}\n\nThe {marker} handbook.\n".encode())},
                data={"title": marker, "metadata": json.dumps({"owner": marker})},
            ),
            admin.post(probes_url(kb_id), json={"question": f"Where is {marker}?", "expect": {"contains": marker}}),
            admin.post(documents_url(kb_id), files={"file": (f"{marker}.pdf", f"%PDF-1.7 {marker}".encode())}),
        ]

    assert [response.status_code for response in responses] == [201, 201, 201, 201, 422]
    assert all(len(audit_log.of(response)) == 1 for response in responses)
    assert not [line for line in audit_log.lines() if marker in line]
    assert not [line for line in audit_log.lines() if bearer in line or bearer.split(".")[2] in line]


def test_audit_records_are_written_when_the_log_level_hides_informational_records(
    admin: httpx.Client, served: ServingProcess, audit_log: AuditLog
) -> None:
    """The server logs at WARNING: no access-log line, yet every audit record (at INFO)."""
    created = admin.post("/v1/knowledge-bases", json={"name": "quiet"})

    assert audit_log.one(created)["severity"] == "INFO"
    assert '"logger":"ragwatch.access"' not in served.output()
