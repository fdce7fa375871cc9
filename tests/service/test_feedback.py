"""``POST /v1/feedback``: a rating of an answer named by its trace id, for members of the answer's tenant only;
stored with its comment, and counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import lancedb
import pytest

from tests.conftest import ClientFactory
from tests.support import (
    HANDBOOK,
    LiveServer,
    RedisServer,
    assert_problem,
    auth,
    create_kb,
    fresh_tenant,
    ingest,
    live_server,
    make_settings,
    metric_total,
    two_replicas,
)

INVALID = "invalid-request"
QUESTION = "How many days of paid vacation does an employee get?"


def answer(client: httpx.Client, kb_id: str, question: str = QUESTION) -> dict[str, Any]:
    response = client.post("/v1/chat", json={"kb_id": kb_id, "question": question})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def handbook(admin: httpx.Client) -> str:
    kb_id = create_kb(admin, "handbook")
    ingest(admin, kb_id, title="Handbook", text=HANDBOOK)
    return kb_id


def test_feedback_on_an_answer_is_accepted_and_counted_by_rating(
    admin: httpx.Client, client_for: ClientFactory, handbook: str
) -> None:
    trace_id = answer(admin, handbook)["trace_id"]
    down_before = metric_total(admin, "rag_answer_feedback_total", rating="down", kb=handbook)
    colleague = client_for("acme", "bob", ("member",))

    response = colleague.post("/v1/feedback", json={"trace_id": trace_id, "rating": "down", "comment": "Too vague"})

    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["trace_id"], body["kb_id"], body["rating"]) == (trace_id, handbook, "down")
    assert metric_total(admin, "rag_answer_feedback_total", rating="down", kb=handbook) == down_before + 1


def test_a_cached_answer_and_a_completion_can_be_rated_too(admin: httpx.Client, handbook: str) -> None:
    answer(admin, handbook)
    cached = answer(admin, handbook)
    completion = admin.post(
        "/v1/chat/completions", json={"model": handbook, "messages": [{"role": "user", "content": QUESTION}]}
    ).json()

    for trace_id in (cached["trace_id"], completion["trace_id"]):
        response = admin.post("/v1/feedback", json={"trace_id": trace_id, "rating": "up"})
        assert response.status_code == 201, response.text
    assert cached["cached"] is True


def test_feedback_is_stored_with_its_comment(tmp_path: Path) -> None:
    with live_server(make_settings(tmp_path)) as server, server.client(auth()) as client:
        kb_id = create_kb(client, "handbook")
        ingest(client, kb_id, title="Handbook", text=HANDBOOK)
        trace_id = answer(client, kb_id)["trace_id"]
        client.post("/v1/feedback", json={"trace_id": trace_id, "rating": "down", "comment": "Cites the wrong year"})

    rows = lancedb.connect(tmp_path / "lancedb").open_table("feedback").to_arrow().to_pylist()

    assert len(rows) == 1
    assert rows[0]["trace_id"] == trace_id
    assert (rows[0]["rating"], rows[0]["comment"], rows[0]["kb_id"]) == ("down", "Cites the wrong year", kb_id)
    assert (rows[0]["user_id"], rows[0]["answered_user_id"], rows[0]["tenant_id"]) == ("alice", "alice", "acme")
    assert len(rows[0]["span_id"]) == 16


def test_feedback_on_an_unknown_trace_or_another_tenants_answer_is_a_404(
    admin: httpx.Client, client_for: ClientFactory, handbook: str
) -> None:
    trace_id = answer(admin, handbook)["trace_id"]
    stranger = client_for(fresh_tenant(), "mallory", ("admin",))

    foreign = stranger.post("/v1/feedback", json={"trace_id": trace_id, "rating": "down"})
    unknown = admin.post("/v1/feedback", json={"trace_id": "0" * 31 + "1", "rating": "up"})

    assert_problem(foreign, 404, "not-found")
    assert_problem(unknown, 404, "not-found")


@pytest.mark.parametrize(
    "body",
    [
        {"trace_id": "not-a-trace", "rating": "up"},
        {"trace_id": "A" * 32, "rating": "up"},
        {"trace_id": "0" * 32, "rating": "meh"},
        {"trace_id": "0" * 32},
        {"rating": "up"},
        {"trace_id": "0" * 32, "rating": "up", "comment": "x" * 2001},
        {"trace_id": "0" * 32, "rating": "up", "score": 5},
    ],
)
def test_malformed_feedback_is_a_400(admin: httpx.Client, body: dict[str, Any]) -> None:
    assert_problem(admin.post("/v1/feedback", json=body), 400, INVALID)


def test_feedback_needs_the_member_role(server: LiveServer, client_for: ClientFactory) -> None:
    no_roles = client_for("acme", "carol", ())

    assert_problem(no_roles.post("/v1/feedback", json={"trace_id": "0" * 32, "rating": "up"}), 403, "forbidden")


def test_with_redis_feedback_reaches_the_answer_through_another_replica(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with two_replicas(tmp_path, redis_server.url, fresh_tenant()) as (one, other):
        kb_id = create_kb(one, "handbook")
        ingest(one, kb_id, title="Handbook", text=HANDBOOK)
        trace_id = answer(one, kb_id)["trace_id"]
        response = other.post("/v1/feedback", json={"trace_id": trace_id, "rating": "up"})

    assert response.status_code == 201, response.text


def test_only_a_users_first_rating_of_an_answer_is_counted_and_every_rating_is_stored(tmp_path: Path) -> None:
    with live_server(make_settings(tmp_path)) as server, server.client(auth()) as client:
        kb_id = create_kb(client, "handbook")
        ingest(client, kb_id, title="Handbook", text=HANDBOOK)
        trace_id = answer(client, kb_id)["trace_id"]
        statuses = [
            client.post("/v1/feedback", json={"trace_id": trace_id, "rating": rating}).status_code
            for rating in ("down", "down", "down", "up")
        ]
        counted = {r: metric_total(client, "rag_answer_feedback_total", rating=r, kb=kb_id) for r in ("up", "down")}

    stored = lancedb.connect(tmp_path / "lancedb").open_table("feedback").to_arrow().to_pylist()
    assert statuses == [201] * 4
    assert counted == {"up": 0, "down": 1}
    assert [row["rating"] for row in sorted(stored, key=lambda row: row["created_at"])] == ["down"] * 3 + ["up"]


def test_while_redis_is_down_feedback_is_a_503(tmp_path: Path, own_redis: RedisServer) -> None:
    with (
        live_server(make_settings(tmp_path, RAGWATCH_REDIS_URL=own_redis.url)) as server,
        server.client(auth(fresh_tenant())) as client,
    ):
        kb_id = create_kb(client, "handbook")
        ingest(client, kb_id, title="Handbook", text=HANDBOOK)
        trace_id = answer(client, kb_id)["trace_id"]
        own_redis.stop()
        response = client.post("/v1/feedback", json={"trace_id": trace_id, "rating": "up"})

    assert_problem(response, 503, "shared-state-unavailable")


def test_deleting_a_knowledge_base_deletes_its_probes_and_the_feedback_on_its_answers(tmp_path: Path) -> None:
    with live_server(make_settings(tmp_path)) as server, server.client(auth()) as client:
        kept, deleted = create_kb(client, "kept"), create_kb(client, "deleted")
        for kb_id in (kept, deleted):
            ingest(client, kb_id, title="Handbook", text=HANDBOOK)
            trace_id = answer(client, kb_id)["trace_id"]
            assert client.post("/v1/feedback", json={"trace_id": trace_id, "rating": "up"}).status_code == 201
            probe = {"question": QUESTION, "expect": {"contains": "twenty-five"}}
            assert client.post(f"/v1/knowledge-bases/{kb_id}/probes", json=probe).status_code == 201
        assert client.delete(f"/v1/knowledge-bases/{deleted}").status_code == 204

    database = lancedb.connect(tmp_path / "lancedb")
    left = {
        name: {row["kb_id"] for row in database.open_table(name).to_arrow().to_pylist()}
        for name in ("probes", "feedback")
    }

    assert left == {"probes": {kept}, "feedback": {kept}}
