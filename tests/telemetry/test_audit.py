"""Audit records over OTLP: OpenTelemetry events named ``ragwatch.audit`` that always leave the process, even in a
trace the sampler drops, whose informational records (the access log's) are dropped with it."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support import auth
from tests.telemetry.otlp_receiver import OtlpHttpReceiver, attributes, ragwatch_serve, wait_until

AUDIT_EVENT = "ragwatch.audit"


def test_audit_records_arrive_over_otlp_as_events_even_when_their_trace_is_sampled_out(tmp_path: Path) -> None:
    with OtlpHttpReceiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_BLRP_SCHEDULE_DELAY": "100",
            "RAGWATCH_TRACE_SAMPLE_SHARE": "0",  # no ordinary trace is kept...
            "RAGWATCH_TRACE_SLOW_S": "60",  # ...nor any of these for being slow
        }
        with (
            ragwatch_serve(tmp_path, **env) as served,
            served.client(auth()) as admin,
            served.client(auth(user="bob", roles=("member",))) as member,
        ):
            created = admin.post("/v1/knowledge-bases", json={"name": "audited"})
            kb_id = created.json()["id"]
            denied = member.delete(f"/v1/knowledge-bases/{kb_id}")
            deleted = admin.delete(f"/v1/knowledge-bases/{kb_id}")
            responses = {"created": created, "denied": denied, "deleted": deleted}
            trace_ids = {name: response.headers["traceresponse"].split("-")[1] for name, response in responses.items()}

            def audited() -> dict[str, list[dict[str, object]]]:
                found: dict[str, list[dict[str, object]]] = {}
                for record in receiver.received.log_records():
                    if record.event_name == AUDIT_EVENT:
                        found.setdefault(record.trace_id.hex(), []).append(attributes(record.attributes))
                return found

            wait_until(lambda: set(trace_ids.values()) <= set(audited()), what="the audit records")
            time.sleep(0.5)  # anything else of those traces has had time to arrive

    assert [response.status_code for response in responses.values()] == [201, 403, 204]
    events = {name: audited()[trace_id] for name, trace_id in trace_ids.items()}
    assert {name: len(found) for name, found in events.items()} == {"created": 1, "denied": 1, "deleted": 1}
    summary = {
        name: (found[0]["rag.audit.action"], found[0]["rag.audit.outcome"], found[0].get("enduser.id"))
        for name, found in events.items()
    }
    assert summary == {
        "created": ("knowledge_base.create", "success", "alice"),
        "denied": ("knowledge_base.delete", "denied", "bob"),
        "deleted": ("knowledge_base.delete", "success", "alice"),
    }
    assert events["deleted"][0]["rag.audit.target.id"] == kb_id
    assert all("event.name" not in found[0] for found in events.values())  # the EventName field, not the attribute
    # The traces themselves were dropped, and their access records with them (written after the server span
    # ended, they follow the decision just made).
    exported = {span.trace_id.hex() for span in receiver.received.spans()}
    assert not exported & set(trace_ids.values())
    of_those_traces = [r for r in receiver.received.log_records() if r.trace_id.hex() in set(trace_ids.values())]
    assert {record.event_name for record in of_those_traces} == {AUDIT_EVENT}
