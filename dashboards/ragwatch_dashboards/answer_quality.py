"""ragwatch / Answer quality: are the answers still good? Users' feedback, the per-answer quality scores
(groundedness, citation coverage, best retrieval score), the share of questions left without an answer, and the
golden-question probes; each leads to the traces of the answers concerned.

The scores are histograms in tenths (0.1 to 1) with exemplars; the chat span ``chat {model}`` carries the same
scores as ``rag.answer.groundedness``, ``rag.answer.citation_coverage``, ``rag.retrieval.top_score`` and
``rag.answer.outcome``, so TraceQL finds the poor answers themselves. A probe run is a root span ``probe`` with
``rag.probe.id`` and ``rag.kb.id``. Feedback is also a log record in the answer's own trace.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common, heatmap, table, timeseries
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as dm

from .frame import dashboard
from .links import trace_link
from .objectives import REQUEST_LATENCY
from .panels import (
    bargauge_panel,
    fixed_colour,
    heatmap_panel,
    logs_panel,
    neutral,
    rows,
    stat_panel,
    table_panel,
    thresholds,
    timeseries_panel,
    trace_table_panel,
    value_texts,
)
from .queries import (
    RATE,
    TENANT,
    average,
    logs,
    prom,
    quantiles,
    ratio,
    series,
    share_over_range,
    traceql,
    traces,
)

FILE = "answer-quality.json"

POOR = 0.5
"""Below this, an answer's score is poor: the trace links look for answers scoring under it."""
SCORE = thresholds("red", (POOR, "yellow"), (0.7, "green"))  # groundedness, citation coverage
TOP_SCORE = thresholds("red", (0.3, "yellow"), (POOR, "green"))
DOWN_SHARE = thresholds("green", (0.15, "yellow"), (0.3, "red"))  # the NegativeFeedbackHigh alert: 30 %
NO_ANSWER_SHARE = thresholds("green", (0.1, "yellow"), (0.3, "red"))
PASS_FAIL = value_texts(**{"1": ("pass", "green"), "0": ("fail", "red")})
OTHER = ' Past the first 100 tenants (and 200 knowledge bases) a process sees, they share the label "other".'
EXEMPLARS = (
    "Exemplars (with OTLP export) mark sampled answers, the worst buckets included: hover one to open its trace"
    " in Tempo."
)

ANSWERS = trace_link("Answers in Tempo", "span.rag.answer.outcome!=nil")
NO_ANSWERS = trace_link("Chats left without an answer in Tempo", 'span.rag.answer.outcome="no_answer"')
FAILED_ANSWERS = trace_link("Chats that failed in Tempo", 'span.rag.answer.outcome="error"')
KB_ANSWERS = trace_link(
    "Answers from knowledge base ${__field.labels.kb} in Tempo",
    'span.rag.kb.id="${__field.labels.kb}"',
    "span.rag.answer.outcome!=nil",
)
KB_NO_ANSWERS = trace_link(
    "Chats left without an answer by knowledge base ${__field.labels.kb} in Tempo",
    'span.rag.kb.id="${__field.labels.kb}"',
    'span.rag.answer.outcome="no_answer"',
)
PROBES = trace_link("Golden-question probe runs in Tempo", 'name="probe"')
SLOW_PROBES = trace_link("Probe runs slower than 5.12 s in Tempo", 'name="probe"', "duration>5120ms")
PROBE_TRACES = trace_link(
    "Runs of probe ${__data.fields.probe} in Tempo",
    'name="probe"',
    'span.rag.probe.id="${__data.fields.probe}"',
    'span.rag.kb.id="${__data.fields.kb_id}"',
)


def _poor_answers(attribute: str, what: str) -> db.DashboardLink:
    """Answers whose score ``attribute`` (a span attribute of ``chat {model}``) is below ``POOR``."""
    return trace_link(f"Answers with {what} below {POOR} in Tempo", f"span.{attribute} < {POOR}")


def _tenant_poor_answers(attribute: str, what: str) -> db.DashboardLink:
    """The same, of the tenant of the series clicked."""
    return trace_link(
        f"Answers of tenant ${{__field.labels.tenant}} with {what} below {POOR} in Tempo",
        'span.rag.tenant.id="${__field.labels.tenant}"',
        f"span.{attribute} < {POOR}",
    )


def _distribution(title: str, histogram: str, attribute: str, what: str, meaning: str) -> heatmap.Panel:
    bucket = series(f"{histogram}_bucket", TENANT)
    return heatmap_panel(
        f"{title} distribution",
        f"How many answers scored in each tenth, over time ({histogram}, the selected tenants): {meaning}"
        f" {EXEMPLARS} The header link lists the answers scoring below {POOR}.",
        [prom(f"sum by (le) (increase({bucket}[{RATE}]))", "{{le}}", exemplar=True, heatmap=True)],
        unit="none",
        steps=neutral(),
        links=[_poor_answers(attribute, what)],
    )


def _over_time(
    title: str, histogram: str, attribute: str, what: str, *, unit: str, steps: db.ThresholdsConfig
) -> timeseries.Panel:
    return timeseries_panel(
        f"{title} over time",
        f"The mean {what} of each selected tenant's answers ({histogram}) and its worst tenth (p10, from the"
        f" tenths' buckets). Click a line for that tenant's answers below {POOR}. {EXEMPLARS}",
        [
            prom(average(histogram, TENANT, by="tenant"), "mean {{tenant}}"),
            *quantiles(series(f"{histogram}_bucket", TENANT), "tenant", "{{tenant}}", [0.1], exemplar=True),
        ],
        unit=unit,
        steps=steps,
        size=(8, 8),
        show_thresholds=True,
        decimals=2,
        max_value=1.0,
        links=[_poor_answers(attribute, what)],
        data_links=[_tenant_poor_answers(attribute, what)],
    )


def _probe_table() -> table.Panel:
    success = series("rag_probe_success")
    return (
        table_panel(
            "Golden-question probes",
            "Each golden-question probe of the selected instances and whether its last run passed"
            " (rag_probe_success: 1 pass, 0 fail or error; one replica runs a probe at a time, so the table"
            " shows fail only when no replica's last run passed). Click a row for the traces of that probe's"
            " runs in Tempo: each run is a root span named probe.",
            [prom(f"max by (kb_id, probe) ({success})", "{{kb_id}} {{probe}}", instant=True, table=True)],
            unit="none",
            steps=thresholds("red", (1.0, "green")),
            mappings=PASS_FAIL,
            data_links=[PROBE_TRACES],
        )
        .with_transformation(
            dm.DataTransformerConfig(
                id_val="organize", options={"excludeByName": {"Time": True}, "renameByName": {"Value": "last run"}}
            )
        )
        .override_by_field_type(
            "number", [dm.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"})]
        )
        .sort_by([common.TableSortByFieldState().display_name("last run")])
    )


def build() -> dm.Dashboard:
    feedback = series("rag_answer_feedback_total", TENANT, 'rating=~"up|down"')
    down = series("rag_answer_feedback_total", TENANT, 'rating="down"')
    # Answers served: an error is no verdict on the knowledge base, so the no-answer share leaves errors out.
    served = series("rag_answers_total", TENANT, 'outcome=~"answered|no_answer"')
    no_answer = series("rag_answers_total", TENANT, 'outcome="no_answer"')
    answers = series("rag_answers_total", TENANT)
    probe_runs = series("rag_probe_runs_total")
    probe_success = series("rag_probe_success")
    kb = "tenant, kb"

    panels = rows(
        [
            stat_panel(
                "Left without an answer",
                "Share of the selected tenants' chats answered that the knowledge base does not say, over the"
                " time range (rag_answers_total: no_answer among answered and no_answer; failed chats left out).",
                [prom(share_over_range(no_answer, served), "no answer", instant=True)],
                unit="percentunit",
                steps=NO_ANSWER_SHARE,
                decimals=1,
                links=[NO_ANSWERS],
            ),
            stat_panel(
                "Down share of feedback",
                'Share of the feedback on the selected tenants\' answers rated "down" over the time range'
                " (rag_answer_feedback_total); the NegativeFeedbackHigh alert fires above 30 % of at least 20"
                " feedbacks over 6 hours.",
                [prom(share_over_range(down, feedback), "down", instant=True)],
                unit="percentunit",
                steps=DOWN_SHARE,
                decimals=1,
            ),
            stat_panel(
                "Feedback received",
                "Feedback given on the selected tenants' answers over the time range, up and down"
                " (rag_answer_feedback_total).",
                [prom(f"sum(increase({feedback}[$__range]))", "feedbacks", instant=True)],
                unit="short",
                steps=neutral(),
                decimals=0,
            ),
            stat_panel(
                "Mean groundedness",
                "Mean share of an answer's content words found in the passages it cites, over the time range"
                f" (rag_answer_groundedness, the selected tenants). Below {POOR} answers say what their sources"
                " do not.",
                [prom(average("rag_answer_groundedness", TENANT, window="$__range"), "groundedness", instant=True)],
                unit="percentunit",
                steps=SCORE,
                decimals=1,
                links=[_poor_answers("rag.answer.groundedness", "groundedness")],
            ),
            stat_panel(
                "Mean citation coverage",
                "Mean share of an answer's sentences that carry a [n] citation, over the time range"
                " (rag_answer_citation_coverage, the selected tenants).",
                [
                    prom(
                        average("rag_answer_citation_coverage", TENANT, window="$__range"),
                        "citation coverage",
                        instant=True,
                    )
                ],
                unit="percentunit",
                steps=SCORE,
                decimals=1,
                links=[_poor_answers("rag.answer.citation_coverage", "citation coverage")],
            ),
            stat_panel(
                "Golden questions failing",
                "Golden-question probes whose last run failed on every selected instance (rag_probe_success);"
                " the GoldenQuestionFailing alert fires after 15 minutes.",
                [prom(f"count(max by (kb_id, probe) ({probe_success}) == 0) or vector(0)", "failing")],
                unit="short",
                steps=thresholds("green", (1.0, "red")),
                decimals=0,
                links=[PROBES],
            ),
        ],
        [
            timeseries_panel(
                "Feedback per hour by rating",
                "Feedback on the selected tenants' answers per hour, up and down (rag_answer_feedback_total)."
                " Each feedback is also a log record in the answer's own trace (below).",
                [prom(f"sum by (rating) (rate({feedback}[{RATE}])) * 3600", "{{rating}}")],
                unit="count:feedbacks/h",
                size=(8, 8),
            )
            .override_by_name("up", fixed_colour("green"))
            .override_by_name("down", fixed_colour("red")),
            bargauge_panel(
                "Feedback by knowledge base",
                "Feedback over the time range per tenant, knowledge base and rating (rag_answer_feedback_total,"
                " each user's first rating of an answer). Click a bar for that knowledge base's answers in Tempo."
                + OTHER,
                [
                    prom(
                        f"sum by (tenant, kb, rating) (increase({feedback}[$__range]))",
                        "{{tenant}} / {{kb}}: {{rating}}",
                        instant=True,
                    )
                ],
                unit="short",
                steps=neutral(),
                size=(8, 8),
                decimals=0,
                data_links=[KB_ANSWERS],
            ),
            bargauge_panel(
                "Down share by knowledge base",
                'Share of each knowledge base\'s feedback rated "down" over the time range; the alert fires above'
                " 30 %. Click a bar for that knowledge base's answers in Tempo." + OTHER,
                [prom(share_over_range(down, feedback, kb), "{{tenant}} / {{kb}}", instant=True)],
                unit="percentunit",
                steps=DOWN_SHARE,
                size=(8, 8),
                decimals=1,
                min_value=0.0,
                max_value=1.0,
                data_links=[KB_ANSWERS],
            ),
        ],
        [
            _distribution(
                "Groundedness",
                "rag_answer_groundedness",
                "rag.answer.groundedness",
                "groundedness",
                "the share of an answer's content words found in the passages it cites.",
            ),
            _distribution(
                "Citation coverage",
                "rag_answer_citation_coverage",
                "rag.answer.citation_coverage",
                "citation coverage",
                "the share of an answer's sentences that carry a citation.",
            ),
            _distribution(
                "Top retrieval score",
                "rag_retrieval_top_score",
                "rag.retrieval.top_score",
                "a top retrieval score",
                "the best fused score of the passages retrieved, how well the knowledge base matched the question.",
            ),
        ],
        [
            _over_time(
                "Groundedness",
                "rag_answer_groundedness",
                "rag.answer.groundedness",
                "groundedness",
                unit="percentunit",
                steps=SCORE,
            ),
            _over_time(
                "Citation coverage",
                "rag_answer_citation_coverage",
                "rag.answer.citation_coverage",
                "citation coverage",
                unit="percentunit",
                steps=SCORE,
            ),
            _over_time(
                "Top retrieval score",
                "rag_retrieval_top_score",
                "rag.retrieval.top_score",
                "top retrieval score",
                unit="none",
                steps=TOP_SCORE,
            ),
        ],
        [
            timeseries_panel(
                "No-answer share by knowledge base",
                "Share of each knowledge base's chats answered that the knowledge base does not say (no_answer"
                " among answered and no_answer, rag_answers_total); dashed lines at 10 % and 30 %. Click a line"
                " for those chats' traces." + OTHER,
                [prom(ratio(no_answer, served, kb), "{{tenant}} / {{kb}}")],
                unit="percentunit",
                steps=NO_ANSWER_SHARE,
                show_thresholds=True,
                max_value=1.0,
                links=[NO_ANSWERS],
                data_links=[KB_NO_ANSWERS],
            ),
            timeseries_panel(
                "Answers by outcome",
                "Chats answered per second by outcome (rag_answers_total, the selected tenants; probes never"
                " count): answered, no_answer (retrieval found nothing, or the answer says the knowledge base"
                " does not say) or error (the request failed after it was admitted).",
                [prom(f"sum by (outcome) (rate({answers}[{RATE}]))", "{{outcome}}")],
                unit="count:answers/s",
                links=[ANSWERS, NO_ANSWERS, FAILED_ANSWERS],
            )
            .override_by_name("answered", fixed_colour("green"))
            .override_by_name("no_answer", fixed_colour("orange"))
            .override_by_name("error", fixed_colour("red")),
        ],
        [
            _probe_table(),
            timeseries_panel(
                "Probe runs per hour by result",
                "Golden-question probe runs per hour of the selected instances (rag_probe_runs_total): pass, fail"
                " (the expected document was not cited or the text not found) or error (the run raised).",
                [prom(f"sum by (result) (rate({probe_runs}[{RATE}])) * 3600", "{{result}}")],
                unit="count:runs/h",
                size=(6, 8),
                links=[PROBES],
            )
            .override_by_name("pass", fixed_colour("green"))
            .override_by_name("fail", fixed_colour("orange"))
            .override_by_name("error", fixed_colour("red")),
            timeseries_panel(
                "Probe duration p50 / p95",
                "Time of one golden-question probe run, retrieval and answer (rag_probe_duration_seconds). The"
                " header links open the probe runs' traces in Tempo. Exemplars (with OTLP export) mark sampled"
                " runs: hover one to open its trace.",
                quantiles(series("rag_probe_duration_seconds_bucket"), "job", "probe run", [0.5, 0.95]),
                unit="s",
                steps=REQUEST_LATENCY,
                size=(6, 8),
                links=[SLOW_PROBES, PROBES],
            ),
        ],
        [
            logs_panel(
                "Feedback",
                "Feedback records from Loki, newest first: the line is the rating; the structured metadata carries"
                " rag_feedback_rating, rag_kb_id, rag_tenant_id, user_id and the answer's own trace_id and"
                " span_id (the comment only with RAGWATCH_CAPTURE_CONTENT). The OTLP event name"
                " (ragwatch.feedback) is not kept by Loki, so the query selects the records that carry a rating."
                " Expand a line for its fields: the Loki datasource's derived field turns trace_id into a link to"
                " the answer's trace in Tempo.",
                [
                    logs(
                        '{service_name="ragwatch"} | rag_feedback_rating=~"up|down"'
                        ' | deployment_environment_name=~"$environment" | rag_tenant_id=~"$tenant"'
                    )
                ],
                links=[ANSWERS],
            )
        ],
        [
            trace_table_panel(
                f"Recent answers grounded below {POOR}",
                f"The latest answers whose groundedness was below {POOR}, from Tempo (the chat span's"
                " rag.answer.groundedness); click a trace id to open it.",
                [traces(traceql(f"span.rag.answer.groundedness < {POOR}"))],
            )
        ],
    )
    return dashboard(
        "ragwatch-answer-quality",
        "ragwatch / Answer quality",
        "Are the answers still good: users' feedback, groundedness, citation coverage and retrieval scores, the"
        " share of questions left without an answer, and the golden-question probes, each leading to the traces"
        " of the answers concerned.",
        panels,
    )
