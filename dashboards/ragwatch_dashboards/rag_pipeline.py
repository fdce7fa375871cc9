"""ragwatch / RAG pipeline: the stages of an answer: retrieval, the caches, the LLM (latency, time to first
token, tokens, errors, spend) and LanceDB."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as dm

from .frame import dashboard
from .links import EXEMPLARS, MODEL_TRACES, trace_link
from .objectives import REQUEST_LATENCY
from .panels import neutral, rows, stat_panel, state_timeline_panel, thresholds, timeseries_panel, value_texts
from .queries import RATE, prom, quantiles, ratio, series

FILE = "rag-pipeline.json"

MODEL = "gen_ai_provider_name, gen_ai_request_model"
MODEL_LEGEND = "{{gen_ai_provider_name}} {{gen_ai_request_model}}"
LLM_ERRORS = thresholds("green", (0.01, "yellow"), (0.05, "red"))
HIT_RATIO = thresholds("orange", (0.2, "green"))
CIRCUIT = thresholds("green", (1.0, "red"))
CLOSED_OPEN = value_texts(**{"0": ("closed", "green"), "1": ("open", "red")})
NOTHING_FOUND = thresholds("green", (0.1, "yellow"), (0.3, "red"))
SLOW_CHAT_CALLS = trace_link(
    "LLM chat calls slower than 2.56 s in Tempo", 'span.gen_ai.operation.name="chat"', "duration>2560ms"
)


def build() -> dm.Dashboard:
    calls = series("rag_llm_calls_total")
    # A call cancelled because the client went away is no LLM failure: the error ratios leave it out.
    failed = series("rag_llm_calls_total", 'status!~"ok|cancelled"')
    finished = series("rag_llm_calls_total", 'status!="cancelled"')
    chat_duration = series("gen_ai_client_operation_duration_seconds_bucket", 'gen_ai_operation_name="chat"')
    embed_duration = series("gen_ai_client_operation_duration_seconds_bucket", 'gen_ai_operation_name="embeddings"')
    lookups = series("rag_cache_lookups_total")
    hits = series("rag_cache_lookups_total", 'outcome="hit"')
    answers = series("rag_cache_lookups_total", 'cache="answers"')
    answer_hits = series("rag_cache_lookups_total", 'cache="answers"', 'outcome="hit"')
    retrievals = series("rag_retrieval_results_count")
    found_nothing = series("rag_retrieval_results_bucket", 'le="0"')
    db_queries = series("rag_vector_db_queries_total")
    db_errors = series("rag_vector_db_queries_total", 'status="error"')

    panels = rows(
        [
            stat_panel(
                "LLM calls",
                "Chat calls to the answerer per second (rag_llm_calls_total).",
                [prom(f"sum(rate({calls}[{RATE}]))", "calls/s")],
                unit="ops",
                steps=neutral(),
            ),
            stat_panel(
                "LLM error ratio",
                "Share of chat calls that failed: any status but ok, leaving out calls cancelled because the client"
                " went away.",
                [prom(ratio(failed, finished), "errors")],
                unit="percentunit",
                steps=LLM_ERRORS,
                decimals=2,
            ),
            stat_panel(
                "Answer cache hit ratio",
                "Share of answer-cache lookups that found an answer, which then needs no LLM call.",
                [prom(ratio(answer_hits, answers), "hit ratio")],
                unit="percentunit",
                steps=HIT_RATIO,
                decimals=1,
            ),
            stat_panel(
                "Retrievals finding nothing",
                'Share of retrievals that returned no passage (the le="0" bucket of rag_retrieval_results): those'
                " chats answer that the knowledge base does not say, without an LLM call.",
                [prom(ratio(found_nothing, retrievals), "found nothing")],
                unit="percentunit",
                steps=NOTHING_FOUND,
                decimals=1,
            ),
            stat_panel(
                "LLM spend",
                "LLM spend (chat and embeddings) over the selected time range, priced from the model price table.",
                [prom(f"sum(increase({series('rag_llm_cost_total')}[$__range]))", "USD", instant=True)],
                unit="currencyUSD",
                steps=neutral(),
                decimals=2,
                size=(8, 5),
            ),
        ],
        [
            timeseries_panel(
                "LLM chat latency p50 / p95 / p99",
                "Duration of each chat call, by provider and model (gen_ai_client_operation_duration_seconds)."
                f" Click a line for that model's traces. {EXEMPLARS}",
                quantiles(chat_duration, MODEL, MODEL_LEGEND),
                unit="s",
                steps=REQUEST_LATENCY,
                size=(12, 9),
                links=[SLOW_CHAT_CALLS],
                data_links=[MODEL_TRACES],
            ),
            timeseries_panel(
                "Time to first token p50 / p95 / p99",
                "Time from a chat call to the first answer token a client can see (the first streamed"
                " delta; for an answer asked for whole, the answer itself), by provider and model"
                f" (rag_llm_time_to_first_token_seconds). {EXEMPLARS}",
                quantiles(series("rag_llm_time_to_first_token_seconds_bucket"), MODEL, MODEL_LEGEND),
                unit="s",
                steps=thresholds("green", (1.28, "yellow"), (2.56, "red")),
                size=(12, 9),
                links=[SLOW_CHAT_CALLS],
                data_links=[MODEL_TRACES],
            ),
        ],
        [
            timeseries_panel(
                "Embeddings latency p50 / p95 / p99",
                f"Duration of each embeddings call (questions and ingested chunks), by provider and model. {EXEMPLARS}",
                quantiles(embed_duration, MODEL, MODEL_LEGEND),
                unit="s",
                steps=thresholds("green", (0.64, "yellow"), (2.56, "red")),
                links=[trace_link("Embeddings calls in Tempo", 'span.gen_ai.operation.name="embeddings"')],
                data_links=[MODEL_TRACES],
            ),
            timeseries_panel(
                "LLM API HTTP duration p95",
                "p95 of the HTTP calls to the OpenAI-compatible API, by server (http_client_request_duration"
                f"_seconds); empty with the offline providers. {EXEMPLARS}",
                quantiles(
                    series("http_client_request_duration_seconds_bucket"),
                    "server_address",
                    "{{server_address}}",
                    [0.95],
                ),
                unit="s",
                steps=REQUEST_LATENCY,
                links=[trace_link("Calls to the LLM API in Tempo", "kind=client", "span.server.address!=nil")],
            ),
        ],
        [
            timeseries_panel(
                "LLM calls by outcome",
                "Chat calls per second by provider, model and status: ok, or the problem type of the failure.",
                [
                    prom(
                        f"sum by (provider, model, status) (rate({calls}[{RATE}]))", "{{provider}} {{model}} {{status}}"
                    )
                ],
                unit="ops",
            ),
            timeseries_panel(
                "LLM error ratio by provider and model",
                "Share of each model's chat calls that failed (cancelled calls left out); dashed lines at 1 % and 5 %.",
                [prom(ratio(failed, finished, "provider, model"), "{{provider}} {{model}}")],
                unit="percentunit",
                steps=LLM_ERRORS,
                show_thresholds=True,
                links=[trace_link("Failed LLM calls in Tempo", "span.gen_ai.operation.name!=nil", "status=error")],
            ),
        ],
        [
            state_timeline_panel(
                "LLM circuits",
                "Each provider operation's circuit on the worst selected instance (rag_llm_circuit_open): open after"
                " RAGWATCH_LLM_BREAKER_FAILURES failed calls in a row, when calls fail at once with 503 until a"
                " trial call succeeds.",
                [
                    prom(
                        f"max by (provider, operation) ({series('rag_llm_circuit_open')})", "{{provider}} {{operation}}"
                    )
                ],
                unit="none",
                steps=CIRCUIT,
                mappings=CLOSED_OPEN,
                size=(12, 8),
            ),
            timeseries_panel(
                "LLM retries",
                "Retries of failed provider calls per second (rag_llm_retries_total): made, or refused because"
                " retries already reached RAGWATCH_LLM_RETRY_BUDGET of the recent calls.",
                [
                    prom(
                        f"sum by (operation, outcome) (rate({series('rag_llm_retries_total')}[{RATE}]))",
                        "{{operation}} {{outcome}}",
                    )
                ],
                unit="ops",
                size=(12, 8),
            ),
        ],
        [
            timeseries_panel(
                "Tokens per second",
                "Input and output tokens per second, by model (the sum of gen_ai_client_token_usage).",
                [
                    prom(
                        f"sum by (gen_ai_token_type, gen_ai_request_model) (rate("
                        f"{series('gen_ai_client_token_usage_sum')}[{RATE}]))",
                        "{{gen_ai_token_type}} {{gen_ai_request_model}}",
                    )
                ],
                unit="count:tokens/s",
                size=(8, 8),
            ),
            timeseries_panel(
                "Tokens per call p50 / p95",
                "Tokens of one call, input and output (gen_ai_client_token_usage, powers-of-four buckets).",
                quantiles(
                    series("gen_ai_client_token_usage_bucket"),
                    "gen_ai_token_type",
                    "{{gen_ai_token_type}}",
                    [0.5, 0.95],
                ),
                unit="count:tokens",
                size=(8, 8),
            ),
            timeseries_panel(
                "LLM spend per hour by model",
                "LLM spend rate in USD per hour, by provider and model (rag_llm_cost_total).",
                [
                    prom(
                        f"sum by (provider, model) (rate({series('rag_llm_cost_total')}[{RATE}])) * 3600",
                        "{{provider}} {{model}}",
                    )
                ],
                unit="currencyUSD",
                size=(8, 8),
            ),
        ],
        [
            timeseries_panel(
                "Retrieval latency p50 / p95 / p99",
                "Hybrid retrieval: question embedding, vector and full-text search, fusion"
                f" (rag_retrieval_duration_seconds). {EXEMPLARS}",
                quantiles(series("rag_retrieval_duration_seconds_bucket"), "job", "retrieval"),
                unit="s",
                steps=thresholds("green", (0.1, "yellow"), (0.5, "red")),
                links=[trace_link("Retrievals slower than 100 ms in Tempo", 'name="rag.retrieve"', "duration>100ms")],
            ),
            timeseries_panel(
                "Passages per retrieval",
                "Median and p95 of the passages a retrieval returned (rag_retrieval_results).",
                quantiles(series("rag_retrieval_results_bucket"), "job", "passages", [0.5, 0.95]),
                unit="count:passages",
                size=(6, 8),
            ),
            timeseries_panel(
                "Retrievals finding nothing",
                "Share of retrievals that returned no passage; dashed lines at 10 % and 30 %.",
                [prom(ratio(found_nothing, retrievals), "found nothing")],
                unit="percentunit",
                steps=NOTHING_FOUND,
                show_thresholds=True,
                size=(6, 8),
            ),
        ],
        [
            timeseries_panel(
                "Cache hit ratio by cache",
                "Share of lookups that hit, in the embeddings, retrieval and answers caches"
                " (rag_cache_lookups_total). A lookup that failed bypassed the cache and counts as no hit.",
                [prom(ratio(hits, lookups, "cache"), "{{cache}}")],
                unit="percentunit",
                steps=HIT_RATIO,
                max_value=1.0,
            ),
            timeseries_panel(
                "Cache lookups by outcome",
                "Lookups per second by cache and outcome: hit, miss, or error (Redis failed or the entry was"
                " unreadable).",
                [prom(f"sum by (cache, outcome) (rate({lookups}[{RATE}]))", "{{cache}} {{outcome}}")],
                unit="ops",
            ),
        ],
        [
            timeseries_panel(
                "Vector DB queries by operation",
                "LanceDB queries per second by operation and status (rag_vector_db_queries_total).",
                [prom(f"sum by (operation, status) (rate({db_queries}[{RATE}]))", "{{operation}} {{status}}")],
                unit="ops",
            ),
            timeseries_panel(
                "Vector DB error ratio",
                "Share of each LanceDB operation's queries that failed.",
                [prom(ratio(db_errors, db_queries, "operation"), "{{operation}}")],
                unit="percentunit",
                steps=thresholds("green", (0.001, "yellow"), (0.01, "red")),
                show_thresholds=True,
                links=[trace_link("Failed LanceDB queries in Tempo", 'span.db.system.name="lancedb"', "status=error")],
            ),
        ],
    )
    return dashboard(
        "ragwatch-rag-pipeline",
        "ragwatch / RAG pipeline",
        "The stages of an answer: retrieval, the caches, the LLM (latency, time to first token, tokens, errors,"
        " spend) and LanceDB.",
        panels,
    )
