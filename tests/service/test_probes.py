"""Golden-question probes: admins keep questions with the document or text their answers must hold; the
service asks them on a schedule through the real retrieval and answer path, reports each run in
``rag_probe_*`` and in its result, outside the user metrics and every rate limit, one replica at a time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ClientFactory
from tests.support import (
    HANDBOOK,
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
    wait_until,
)

PASSING = {"question": "How many days of paid vacation does an employee get?", "expect": {"contains": "twenty-five"}}
FAILING = {"question": "How many days of paid vacation does an employee get?", "expect": {"contains": "forty"}}


def probes_url(kb_id: str) -> str:
    return f"/v1/knowledge-bases/{kb_id}/probes"


def create_probe(client: httpx.Client, kb_id: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(probes_url(kb_id), json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def results(client: httpx.Client, kb_id: str) -> dict[str, Any]:
    return {probe["id"]: probe["last"] for probe in client.get(probes_url(kb_id)).json()["data"]}


# --- keeping probes ---------------------------------------------------------------------------------------------


def test_a_probe_is_created_listed_without_a_result_and_deleted(admin: httpx.Client, kb_id: str) -> None:
    expect = {"document_id": "handbook", "contains": "twenty-five"}
    created = create_probe(admin, kb_id, {"question": "  How long is vacation?  ", "expect": expect})

    listed = admin.get(probes_url(kb_id)).json()["data"]
    deleted = admin.delete(f"{probes_url(kb_id)}/{created['id']}")

    assert created["question"] == "How long is vacation?"
    assert created["expect"] == expect
    assert created["kb_id"] == kb_id
    assert [(p["id"], p["last"]) for p in listed] == [(created["id"], None)]
    assert deleted.status_code == 204
    assert admin.get(probes_url(kb_id)).json()["data"] == []
    assert_problem(admin.delete(f"{probes_url(kb_id)}/{created['id']}"), 404, "not-found")


@pytest.mark.parametrize(
    "body",
    [
        {"question": "Why?", "expect": {}},
        {"question": "", "expect": {"contains": "x"}},
        {"question": "Why?"},
        {"question": "Why?", "expect": {"document_id": "no spaces allowed"}},
        {"question": "Why?", "expect": {"contains": "x"}, "schedule": "hourly"},
    ],
)
def test_a_probe_without_a_question_or_an_expectation_is_a_400(
    admin: httpx.Client, kb_id: str, body: dict[str, Any]
) -> None:
    assert_problem(admin.post(probes_url(kb_id), json=body), 400, "invalid-request")


def test_members_list_probes_and_only_admins_change_them(client_for: ClientFactory, kb_id: str) -> None:
    admin, member = client_for("acme", "alice", ("admin",)), client_for("acme", "bob", ("member",))
    created = create_probe(admin, kb_id, PASSING)

    assert member.get(probes_url(kb_id)).status_code == 200
    assert_problem(member.post(probes_url(kb_id), json=PASSING), 403, "forbidden")
    assert_problem(member.delete(f"{probes_url(kb_id)}/{created['id']}"), 403, "forbidden")


def test_another_tenants_knowledge_base_has_no_probes_for_you(client_for: ClientFactory, kb_id: str) -> None:
    create_probe(client_for(), kb_id, PASSING)
    stranger = client_for(fresh_tenant(), "mallory", ("admin",))

    assert_problem(stranger.get(probes_url(kb_id)), 404, "not-found")
    assert_problem(stranger.post(probes_url(kb_id), json=PASSING), 404, "not-found")


def test_a_knowledge_base_has_at_most_50_probes(admin: httpx.Client, kb_id: str) -> None:
    for _ in range(50):
        create_probe(admin, kb_id, PASSING)

    assert_problem(admin.post(probes_url(kb_id), json=PASSING), 400, "invalid-request")


def test_a_tenant_has_at_most_200_probes_whatever_its_knowledge_bases(client_for: ClientFactory) -> None:
    admin = client_for(fresh_tenant())
    bases = [create_kb(admin, f"kb {n}") for n in range(5)]
    for kb in bases[:4]:
        for _ in range(50):
            create_probe(admin, kb, PASSING)

    refused = admin.post(probes_url(bases[4]), json=PASSING)

    assert_problem(refused, 400, "invalid-request")
    assert "200 probes" in refused.json()["detail"]


# --- running them ------------------------------------------------------------------------------------------------


@pytest.fixture
def probing(tmp_path: Path) -> Iterator[httpx.Client]:
    """A server that runs its probes every second, with a user limit of 3 chats a minute."""
    settings = make_settings(tmp_path, RAGWATCH_PROBE_INTERVAL_S="1", RAGWATCH_RATE_LIMIT_PER_MINUTE="3")
    with live_server(settings) as server, server.client(auth(fresh_tenant())) as client:
        yield client


def test_probes_run_on_their_schedule_and_report_pass_and_fail(probing: httpx.Client) -> None:
    kb_id = create_kb(probing, "handbook")
    document = ingest(probing, kb_id, title="Handbook", text=HANDBOOK)["document_id"]
    passing = create_probe(probing, kb_id, {**PASSING, "expect": {"document_id": document, "contains": "twenty-five"}})
    failing = create_probe(probing, kb_id, FAILING)

    last = wait_until(lambda: (found := results(probing, kb_id)) and all(found.values()) and found, what="both runs")

    assert last[passing["id"]]["result"] == "pass"
    assert last[failing["id"]]["result"] == "fail"
    assert "does not contain 'forty'" in last[failing["id"]]["detail"]
    assert all(len(result["trace_id"]) == 32 and result["duration_s"] > 0 for result in last.values())
    assert metric_total(probing, "rag_probe_success", probe=passing["id"], kb_id=kb_id) == 1
    assert metric_total(probing, "rag_probe_success", probe=failing["id"], kb_id=kb_id) == 0
    assert metric_total(probing, "rag_probe_runs_total", result="pass") >= 1
    assert metric_total(probing, "rag_probe_runs_total", result="fail") >= 1


def test_probe_runs_count_in_no_user_metric_and_use_up_no_rate_limit(probing: httpx.Client) -> None:
    kb_id = create_kb(probing, "handbook")
    ingest(probing, kb_id, title="Handbook", text=HANDBOOK)
    create_probe(probing, kb_id, PASSING)

    wait_until(lambda: metric_total(probing, "rag_probe_runs_total", result="pass") >= 4, what="four probe runs")
    answers = metric_total(probing, "rag_answers_total", kb=kb_id)
    chats = [probing.post("/v1/chat", json={"kb_id": kb_id, "question": "Where do visitors park?"}) for _ in range(3)]

    assert answers == 0
    assert [response.status_code for response in chats] == [200, 200, 200]


def test_a_probe_whose_knowledge_base_is_deleted_goes_with_it(probing: httpx.Client) -> None:
    kb_id = create_kb(probing, "short-lived")
    ingest(probing, kb_id, title="Handbook", text=HANDBOOK)
    probe = create_probe(probing, kb_id, PASSING)
    wait_until(lambda: results(probing, kb_id)[probe["id"]], what="a first run")

    probing.delete(f"/v1/knowledge-bases/{kb_id}").raise_for_status()

    wait_until(
        lambda: (
            metric_total(probing, "rag_probe_success", probe=probe["id"]) == 0
            and f'probe="{probe["id"]}"' not in probing.get("/metrics").text
        ),
        what="the probe's series to go",
    )


def test_with_redis_one_replica_runs_the_probes(tmp_path: Path, redis_server: RedisServer) -> None:
    # A database of its own: the lease of another test's replicas (gone, their lease not yet lapsed) is not in
    # the way.
    redis_url = redis_server.url.removesuffix("/0") + "/6"
    with two_replicas(tmp_path, redis_url, fresh_tenant(), RAGWATCH_PROBE_INTERVAL_S="1") as (one, other):
        kb_id = create_kb(one, "handbook")
        ingest(one, kb_id, title="Handbook", text=HANDBOOK)
        create_probe(one, kb_id, PASSING)

        def runs() -> tuple[float, float]:
            return tuple(metric_total(c, "rag_probe_runs_total", result="pass") for c in (one, other))  # type: ignore[return-value]

        wait_until(lambda: sum(runs()) >= 3, what="three probe runs")
        counted = runs()
        reporting = ["rag_probe_success{" in client.get("/metrics").text for client in (one, other)]

    assert sorted(counted)[0] == 0, f"both replicas ran probes: {counted}"
    assert reporting == [count > 0 for count in counted], "only the replica running the probes reports them"


def test_a_replica_that_stops_gives_the_lease_up_to_another(tmp_path: Path, redis_server: RedisServer) -> None:
    env = {
        "RAGWATCH_REDIS_URL": redis_server.url.removesuffix("/0") + "/5",
        "RAGWATCH_READ_CONSISTENCY_S": "0",
        "RAGWATCH_PROBE_INTERVAL_S": "1",
    }
    data = tmp_path / "shared-lancedb"
    tenant = fresh_tenant()
    with ExitStack() as later, ExitStack() as earlier:
        first = earlier.enter_context(live_server(make_settings(data, **env)))  # starts first: takes the lease
        one = earlier.enter_context(first.client(auth(tenant)))
        second = later.enter_context(live_server(make_settings(data, **env)))
        other = later.enter_context(second.client(auth(tenant)))
        kb_id = create_kb(one, "handbook")
        ingest(one, kb_id, title="Handbook", text=HANDBOOK)
        create_probe(one, kb_id, PASSING)
        wait_until(lambda: "rag_probe_success{" in one.get("/metrics").text, what="the first replica's run")
        assert "rag_probe_success{" not in other.get("/metrics").text

        earlier.close()  # the holder stops; its lease would lapse only after 5 s
        started = time.monotonic()
        wait_until(lambda: "rag_probe_success{" in other.get("/metrics").text, timeout_s=10, what="a takeover")

    assert time.monotonic() - started < 4, "the lease was left to lapse instead of given up"
