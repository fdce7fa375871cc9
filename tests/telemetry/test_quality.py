"""Answer quality in the telemetry: each answer's signals on its chat span, in histograms and as GenAI
``gen_ai.evaluation.result`` events in the span's context; feedback and probe verdicts as the same event, in
the answer's (or the probe run's) own trace."""

from __future__ import annotations

from typing import Any

from opentelemetry._logs import LogRecord

from tests.fake_openai import CHAT, FakeOpenAI, fake_openai, openai_env
from tests.support import wait_until
from tests.telemetry import QUESTION, Recorder, Serve, attributes, hex_span_id, hex_trace_id, kb_with_handbook

__all__ = ["fake_openai"]  # the fixture, imported for pytest

NO_MATCH = "Which colour is the submarine on the logo?"


def evaluations(recorder: Recorder, trace_id: str) -> dict[str, LogRecord]:
    """The ``gen_ai.evaluation.result`` events of a trace, by evaluation name."""
    found = {}
    for record in recorder.log_records():
        if record.event_name == "gen_ai.evaluation.result" and format(record.trace_id or 0, "032x") == trace_id:
            found[str((record.attributes or {})["gen_ai.evaluation.name"])] = record
    return found


def test_an_answer_carries_its_quality_on_its_chat_span_in_histograms_and_as_evaluation_events(
    recorder: Recorder, serve: Serve
) -> None:
    with serve(recorder) as (_, client):
        kb_id = kb_with_handbook(client)
        reply = client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION}).json()

    trace = recorder.trace(reply["trace_id"])
    chat = attributes(trace.named("chat extractive"))
    assert chat["rag.answer.outcome"] == "answered"
    assert 0 < float(chat["rag.retrieval.top_score"]) <= 1
    assert float(chat["rag.answer.groundedness"]) == 1.0  # the extractive answer says only what its passages say
    assert float(chat["rag.answer.citation_coverage"]) > 0
    for histogram in ("rag.answer.groundedness", "rag.answer.citation_coverage", "rag.retrieval.top_score"):
        assert recorder.histogram(histogram, tenant="acme")[0] == 1
    events = evaluations(recorder, reply["trace_id"])
    assert set(events) == {"groundedness", "citation_coverage", "retrieval_top_score"}
    chat_span_id = hex_span_id(trace.named("chat extractive"))
    on_span = {
        "groundedness": chat["rag.answer.groundedness"],
        "citation_coverage": chat["rag.answer.citation_coverage"],
        "retrieval_top_score": chat["rag.retrieval.top_score"],
    }
    for name, record in events.items():
        assert format(record.span_id or 0, "016x") == chat_span_id, name
        assert record.attributes is not None
        assert record.attributes["gen_ai.evaluation.score.value"] == on_span[name]


def test_answers_are_counted_by_outcome_cached_ones_too(recorder: Recorder, serve: Serve) -> None:
    with serve(recorder) as (_, client):
        kb_id = kb_with_handbook(client)
        for question in (QUESTION, QUESTION, NO_MATCH):
            client.post("/v1/chat", json={"kb_id": kb_id, "question": question}).raise_for_status()

    assert recorder.counter("rag.answers", kb=kb_id, outcome="answered") == 2
    assert recorder.counter("rag.answers", kb=kb_id, outcome="no_answer") == 1
    assert recorder.histogram("rag.answer.groundedness", tenant="acme")[0] == 1  # cached answers: measured once


def test_feedback_is_a_log_record_and_an_evaluation_event_in_the_answers_trace_and_span(
    recorder: Recorder, serve: Serve
) -> None:
    with serve(recorder) as (_, client):
        kb_id = kb_with_handbook(client)
        reply = client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION}).json()
        given = client.post("/v1/feedback", json={"trace_id": reply["trace_id"], "rating": "down", "comment": "no"})

    assert given.status_code == 201, given.text
    answer_span = hex_span_id(recorder.trace(reply["trace_id"]).named("chat extractive"))
    [feedback] = [r for r in recorder.log_records() if r.event_name == "ragwatch.feedback"]
    assert format(feedback.trace_id or 0, "032x") == reply["trace_id"]
    assert format(feedback.span_id or 0, "016x") == answer_span
    assert feedback.attributes is not None
    assert feedback.attributes["rag.feedback.rating"] == "down"
    assert feedback.attributes["rag.kb.id"] == kb_id
    assert feedback.attributes["rag.feedback.comment_length"] == 2
    assert "rag.feedback.comment" not in feedback.attributes  # content is captured only when asked for
    event = evaluations(recorder, reply["trace_id"])["user_feedback"]
    assert event.attributes is not None
    assert (event.attributes["gen_ai.evaluation.score.label"], event.attributes["gen_ai.evaluation.score.value"]) == (
        "down",
        0.0,
    )
    assert recorder.counter("rag.answer.feedback", kb=kb_id, rating="down") == 1


def test_a_probe_run_is_a_trace_of_its_own_with_its_verdict_as_an_evaluation_event(
    recorder: Recorder, serve: Serve
) -> None:
    body: dict[str, Any] = {"question": QUESTION, "expect": {"contains": "end of March"}}
    with serve(recorder, RAGWATCH_PROBE_INTERVAL_S="1") as (_, client):
        kb_id = kb_with_handbook(client)
        probe = client.post(f"/v1/knowledge-bases/{kb_id}/probes", json=body).json()
        last = wait_until(
            lambda: client.get(f"/v1/knowledge-bases/{kb_id}/probes").json()["data"][0]["last"], what="a probe run"
        )

    assert last["result"] == "pass", last
    spans = [span for span in recorder.spans() if hex_trace_id(span) == last["trace_id"]]
    [root] = [span for span in spans if span.parent is None]
    assert root.name == "probe"
    assert attributes(root)["rag.probe.id"] == probe["id"]
    assert attributes(root)["rag.probe.result"] == "pass"
    assert "chat extractive" in {span.name for span in spans}
    verdict = evaluations(recorder, last["trace_id"])["golden_probe"]
    assert verdict.attributes is not None
    assert verdict.attributes["gen_ai.evaluation.score.label"] == "pass"
    assert format(verdict.span_id or 0, "016x") == hex_span_id(root)
    assert recorder.counter("rag.answers", kb=kb_id) == 0  # probes are not user answers


def test_a_failed_answer_counts_as_an_error_and_a_callers_mistake_does_not(
    recorder: Recorder, serve: Serve, fake_openai: FakeOpenAI
) -> None:
    with serve(recorder, **openai_env(fake_openai.base_url, RAGWATCH_EMBEDDER="hashing")) as (_, client):
        kb_id = kb_with_handbook(client)
        fake_openai.fail_next(1, 500, path=CHAT)
        failed = client.post("/v1/chat", json={"kb_id": kb_id, "question": QUESTION})
        unknown = client.post("/v1/chat", json={"kb_id": "kb_missing", "question": QUESTION})

    assert (failed.status_code, unknown.status_code) == (502, 404)
    assert recorder.counter("rag.answers", kb=kb_id, outcome="error") == 1
    assert recorder.counter("rag.answers", kb="kb_missing") == 0
