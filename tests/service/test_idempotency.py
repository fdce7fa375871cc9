"""``Idempotency-Key`` on knowledge-base creation and document ingestion: a repeat within 24 h answers the
first result and has no second effect; the same key with another request is a 422; a failed request frees
its key; keys belong to their user; with Redis the promise holds across replicas."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import ClientFactory
from tests.support import (
    RedisServer,
    assert_problem,
    auth,
    counts,
    create_kb,
    documents_url,
    fresh_tenant,
    live_server,
    make_settings,
    two_replicas,
)

REPLAYED = "Idempotent-Replayed"


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def kb_names(client: httpx.Client) -> list[str]:
    return [kb["name"] for kb in client.get("/v1/knowledge-bases", params={"limit": 1000}).json()["data"]]


def test_a_repeated_knowledge_base_creation_answers_the_first_result_and_creates_one(
    client_for: ClientFactory,
) -> None:
    admin = client_for(fresh_tenant())
    body = {"name": "Runbooks", "description": "on-call"}

    first = admin.post("/v1/knowledge-bases", json=body, headers=keyed("create-runbooks"))
    again = admin.post("/v1/knowledge-bases", json=body, headers=keyed("create-runbooks"))

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert REPLAYED not in first.headers
    assert again.headers[REPLAYED] == "true"
    assert kb_names(admin) == ["Runbooks"]


def test_without_a_key_each_creation_creates(client_for: ClientFactory) -> None:
    admin = client_for(fresh_tenant())

    admin.post("/v1/knowledge-bases", json={"name": "Same"}).raise_for_status()
    admin.post("/v1/knowledge-bases", json={"name": "Same"}).raise_for_status()

    assert kb_names(admin) == ["Same", "Same"]


def test_the_same_key_with_another_body_is_a_422_and_creates_nothing(client_for: ClientFactory) -> None:
    admin = client_for(fresh_tenant())
    admin.post("/v1/knowledge-bases", json={"name": "First"}, headers=keyed("k1")).raise_for_status()

    reused = admin.post("/v1/knowledge-bases", json={"name": "Second"}, headers=keyed("k1"))

    assert_problem(reused, 422, "idempotency-key-reused")
    assert kb_names(admin) == ["First"]


def test_a_repeated_json_ingestion_is_written_once(admin: httpx.Client) -> None:
    kb_id = create_kb(admin, "keyed ingestion")
    body = {"title": "Handbook", "text": "Visitors park in the north garage."}

    first = admin.post(documents_url(kb_id), json=body, headers=keyed("ingest-1"))
    again = admin.post(documents_url(kb_id), json=body, headers=keyed("ingest-1"))

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers[REPLAYED] == "true"
    assert counts(admin, kb_id)[0] == 1


def test_a_repeated_upload_is_written_once_and_another_file_under_its_key_is_a_422(admin: httpx.Client) -> None:
    kb_id = create_kb(admin, "keyed uploads")

    def upload(content: bytes) -> httpx.Response:
        files = {"file": ("notes.md", content, "text/markdown")}
        return admin.post(documents_url(kb_id), files=files, data={"title": "Notes"}, headers=keyed("upload-1"))

    first = upload(b"# Notes\n\nThe fire exit is behind the kitchen.")
    again = upload(b"# Notes\n\nThe fire exit is behind the kitchen.")
    other = upload(b"# Notes\n\nSomething else entirely.")

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert_problem(other, 422, "idempotency-key-reused")
    assert counts(admin, kb_id)[0] == 1


def test_the_same_key_for_another_knowledge_base_is_a_422(admin: httpx.Client) -> None:
    first_kb, second_kb = create_kb(admin, "one"), create_kb(admin, "two")
    body = {"title": "Handbook", "text": "Visitors park in the north garage."}
    admin.post(documents_url(first_kb), json=body, headers=keyed("per-kb")).raise_for_status()

    elsewhere = admin.post(documents_url(second_kb), json=body, headers=keyed("per-kb"))

    assert_problem(elsewhere, 422, "idempotency-key-reused")
    assert counts(admin, second_kb)[0] == 0


def test_a_failed_request_frees_its_key_for_the_corrected_one(admin: httpx.Client) -> None:
    kb_id = create_kb(admin, "retry after failure")
    files = {"file": ("broken.pdf", b"%PDF-1.7 this is not a pdf", "application/pdf")}

    failed = admin.post(documents_url(kb_id), files=files, headers=keyed("fix-and-retry"))
    fixed = admin.post(documents_url(kb_id), json={"title": "T", "text": "Fixed."}, headers=keyed("fix-and-retry"))

    assert_problem(failed, 422, "unreadable-document")
    assert fixed.status_code == 201, fixed.text
    assert REPLAYED not in fixed.headers


def test_keys_belong_to_their_user(client_for: ClientFactory) -> None:
    tenant = fresh_tenant()
    alice, carol = client_for(tenant, "alice"), client_for(tenant, "carol")

    mine = alice.post("/v1/knowledge-bases", json={"name": "Alice's"}, headers=keyed("shared-key"))
    theirs = carol.post("/v1/knowledge-bases", json={"name": "Carol's"}, headers=keyed("shared-key"))

    assert mine.status_code == theirs.status_code == 201
    assert REPLAYED not in theirs.headers
    assert sorted(kb_names(alice)) == ["Alice's", "Carol's"]


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\tinside"])
def test_a_malformed_key_is_a_400(admin: httpx.Client, key: str) -> None:
    response = admin.post("/v1/knowledge-bases", json={"name": "Never"}, headers=keyed(key))

    assert_problem(response, 400, "invalid-request")


def test_concurrent_repeats_through_two_replicas_create_once(tmp_path: Path, redis_server: RedisServer) -> None:
    """The same keyed request sent at once through two replicas: one creates, the others replay or are told
    to retry (409); none creates a second knowledge base."""
    with two_replicas(tmp_path, redis_server.url, fresh_tenant()) as (one, other):

        def create(client: httpx.Client) -> httpx.Response:
            return client.post("/v1/knowledge-bases", json={"name": "Once"}, headers=keyed("across-replicas"))

        with ThreadPoolExecutor(max_workers=8) as pool:
            responses = list(pool.map(create, [one, other] * 4))
        later = create(other)
        listed = kb_names(one)

    assert {response.status_code for response in responses} <= {201, 409}
    created = [r for r in responses if r.status_code == 201 and REPLAYED not in r.headers]
    assert len(created) == 1
    assert all(r.headers["Retry-After"] == "1" for r in responses if r.status_code == 409)
    assert later.headers[REPLAYED] == "true"
    assert later.json() == created[0].json()
    assert listed == ["Once"]


def test_while_redis_is_down_a_keyed_request_is_a_503_and_an_unkeyed_one_is_served(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    with (
        live_server(make_settings(tmp_path, RAGWATCH_REDIS_URL=own_redis.url)) as server,
        server.client(auth(fresh_tenant())) as client,
    ):
        own_redis.stop()
        keyed_response = client.post("/v1/knowledge-bases", json={"name": "Keyed"}, headers=keyed("outage"))
        plain = client.post("/v1/knowledge-bases", json={"name": "Plain"})

    assert_problem(keyed_response, 503, "shared-state-unavailable")
    assert plain.status_code == 201, plain.text
