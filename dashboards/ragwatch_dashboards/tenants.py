"""ragwatch / Tenants: who uses ragwatch: active tenants, rate-limit refusals, tokens, LLM spend and ingestion per
tenant."""

from __future__ import annotations

from grafana_foundation_sdk.builders import timeseries
from grafana_foundation_sdk.models import dashboard as dm

from .frame import dashboard
from .links import TENANT_TRACES, trace_link
from .panels import bargauge_panel, neutral, rows, stat_panel, thresholds, timeseries_panel
from .queries import RATE, TENANT, failures, prom, ratio, series

FILE = "tenants.json"

OTHER = ' Past the first 100 tenants a process sees, tenants share the label "other".'
BY_ACTION_ONLY = (
    " Rate-limit decisions carry no tenant label (only action and outcome), so refusals cannot be split by"
    " tenant here; the trace and access log of a refused request name its tenant."
)


def _ingestion(title: str, metric: str, unit: str, what: str) -> timeseries.Panel:
    return timeseries_panel(
        title,
        f"{what} per second by tenant ({metric}).{OTHER}",
        [prom(f"sum by (tenant) (rate({series(metric, TENANT)}[{RATE}]))", "{{tenant}}")],
        unit=unit,
        size=(8, 8),
        data_links=[TENANT_TRACES],
    )


def build() -> dm.Dashboard:
    cost = series("rag_tenant_llm_cost_total", TENANT)
    tokens = series("rag_tenant_tokens_total", TENANT)
    decisions = series("rag_ratelimit_decisions_total")
    refusals = series("rag_ratelimit_decisions_total", 'outcome="refused"')
    fail_open = series("rag_ratelimit_decisions_total", 'outcome="error"')
    active = series("rag_active_tenants")

    panels = rows(
        [
            stat_panel(
                "Active tenants",
                "Distinct tenants that made an authenticated request in the last 5 minutes (rag_active_tenants)."
                " Every replica sharing Redis reports the same fleet-wide count, hence max rather than sum.",
                [prom(f"max({active})", "tenants")],
                unit="short",
                steps=neutral(),
                size=(6, 5),
            ),
            stat_panel(
                "Rate-limit refusals",
                "Requests refused with 429 per second, chat and ingest together." + BY_ACTION_ONLY,
                [prom(f"sum(rate({refusals}[{RATE}]))", "refused/s")],
                unit="reqps",
                steps=thresholds("green", (0.1, "yellow"), (1.0, "red")),
                size=(6, 5),
            ),
            stat_panel(
                "Rate limiter failing open",
                "Decisions per second taken without the counters because Redis could not be reached: the request"
                " went through unchecked.",
                [prom(failures(fail_open, decisions), "fail-open/s")],
                unit="reqps",
                steps=thresholds("green", (0.001, "red")),
                size=(6, 5),
            ),
            stat_panel(
                "LLM spend of the selected tenants",
                "Their LLM spend over the selected time range (rag_tenant_llm_cost_total).",
                [prom(f"sum(increase({cost}[$__range]))", "USD", instant=True)],
                unit="currencyUSD",
                steps=neutral(),
                decimals=2,
                size=(6, 5),
            ),
        ],
        [
            timeseries_panel(
                "Active tenants over time",
                "The fleet-wide count of tenants active in the last 5 minutes (max of rag_active_tenants over"
                " replicas); absent while Redis has been unreachable for 2 minutes.",
                [prom(f"max({active})", "active tenants")],
                unit="short",
                size=(8, 8),
            ),
            timeseries_panel(
                "Rate-limit decisions by action",
                "Decisions per second by action (chat, ingest) and outcome (allowed, refused, error)." + BY_ACTION_ONLY,
                [prom(f"sum by (action, outcome) (rate({decisions}[{RATE}]))", "{{action}} {{outcome}}")],
                unit="reqps",
                size=(8, 8),
            ),
            timeseries_panel(
                "Refused share by action",
                "Share of each action's requests the rate limiter refused." + BY_ACTION_ONLY,
                [prom(ratio(refusals, decisions, "action"), "{{action}}")],
                unit="percentunit",
                steps=thresholds("green", (0.01, "yellow"), (0.1, "red")),
                show_thresholds=True,
                size=(8, 8),
                links=[
                    trace_link("Rate-limited requests in Tempo", "kind=server", "span.http.response.status_code=429")
                ],
            ),
        ],
        [
            timeseries_panel(
                "LLM spend per hour by tenant",
                "Each tenant's LLM spend rate in USD per hour (rag_tenant_llm_cost_total). Click a line for the"
                " tenant's traces." + OTHER,
                [prom(f"sum by (tenant) (rate({cost}[{RATE}])) * 3600", "{{tenant}}")],
                unit="currencyUSD",
                size=(12, 9),
                data_links=[TENANT_TRACES],
            ),
            timeseries_panel(
                "Tokens per second by tenant",
                "Each tenant's LLM tokens per second, input and output (rag_tenant_tokens_total)." + OTHER,
                [
                    prom(
                        f"sum by (tenant, gen_ai_token_type) (rate({tokens}[{RATE}]))",
                        "{{tenant}} {{gen_ai_token_type}}",
                    )
                ],
                unit="count:tokens/s",
                size=(12, 9),
                data_links=[TENANT_TRACES],
            ),
        ],
        [
            bargauge_panel(
                "Top 10 tenants by LLM spend",
                "The ten selected tenants that spent the most over the selected time range.",
                [prom(f"topk(10, sum by (tenant) (increase({cost}[$__range])))", "{{tenant}}", instant=True)],
                unit="currencyUSD",
                steps=neutral(),
                decimals=2,
                data_links=[TENANT_TRACES],
            ),
            bargauge_panel(
                "Top 10 tenants by tokens",
                "The ten selected tenants that used the most tokens (input and output) over the selected time range.",
                [prom(f"topk(10, sum by (tenant) (increase({tokens}[$__range])))", "{{tenant}}", instant=True)],
                unit="count:tokens",
                steps=neutral(),
                decimals=0,
                data_links=[TENANT_TRACES],
            ),
        ],
        [
            bargauge_panel(
                "Token budget used today",
                "Share of its daily LLM token budget each tenant with a budget has used since 00:00 UTC"
                " (rag_tenant_tokens_used / rag_tenant_token_budget, the latest report of any replica). At 100 %"
                " its calls to the provider are refused with 429 until midnight; TenantTokenBudgetNearlySpent"
                f" fires at 80 %.{OTHER}",
                [
                    prom(
                        f"topk(10, max by (tenant) ({series('rag_tenant_tokens_used', TENANT)})"
                        f" / max by (tenant) ({series('rag_tenant_token_budget', TENANT)}))",
                        "{{tenant}}",
                        instant=True,
                    )
                ],
                unit="percentunit",
                steps=thresholds("green", (0.8, "orange"), (1.0, "red")),
                decimals=1,
                min_value=0,
                max_value=1,
                size=(24, 7),
                data_links=[TENANT_TRACES],
            ),
        ],
        [
            _ingestion(
                "Documents ingested by tenant",
                "rag_ingest_documents_total",
                "count:docs/s",
                "Documents ingested or replaced",
            ),
            _ingestion("Chunks written by tenant", "rag_ingest_chunks_total", "count:chunks/s", "Chunks written"),
            _ingestion("Text ingested by tenant", "rag_ingest_bytes_total", "Bps", "Document text (UTF-8 bytes)"),
        ],
    )
    return dashboard(
        "ragwatch-tenants",
        "ragwatch / Tenants",
        "Who uses ragwatch: active tenants, rate-limit refusals, tokens, LLM spend and ingestion per tenant.",
        panels,
    )
