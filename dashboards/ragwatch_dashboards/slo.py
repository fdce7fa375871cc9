"""ragwatch / SLOs: availability (99.5 % of /v1 requests without a 5xx) and chat latency (99 % of POST /v1/chat
within 5.12 s): SLIs, error budget left and burn rates over the alert windows.

The SLIs come from the recording rules of alerts/rules/slo.yml, aggregated by job: the environment and instance
filters do not apply to them, except in the two *by environment* panels, which read the raw counters.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, stat, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import dashboard as dm

from .frame import dashboard
from .links import FAILED_REQUESTS, SLOW_CHATS
from .objectives import AVAILABILITY_BUDGET, BURN_RATE_STEPS, LATENCY_BUDGET, SLO_WINDOWS
from .panels import bargauge_panel, rows, stat_panel, thresholds, timeseries_panel
from .queries import prom, series

FILE = "slo.json"

BUDGETS = {"errors": AVAILABILITY_BUDGET, "latency_slow": LATENCY_BUDGET}
RULES_ONLY = " The recording rules aggregate by job: the environment and instance filters do not apply here."
ENV = "deployment_environment_name"
Link = cogbuilder.Builder[dm.DashboardLink]


def _rule(sli: str, window: str) -> str:
    return f'rag:sli_{sli}:ratio_rate{window}{{job="ragwatch"}}'


def _sli_now(title: str, sli: str, what: str) -> stat.Panel:
    objective = 1 - BUDGETS[sli]
    return stat_panel(
        title,
        f"{what} over the last 3 days (1 - rag:sli_{sli}:ratio_rate3d); the objective is {objective:.1%}." + RULES_ONLY,
        [prom(f"1 - {_rule(sli, '3d')}", "SLI")],
        unit="percentunit",
        steps=thresholds("red", (objective, "green")),
        decimals=3,
        size=(6, 6),
    )


def _budget_left(title: str, record: str) -> stat.Panel:
    return stat_panel(
        title,
        f"Share of the 30-day error budget still unspent ({record}, from alerts/rules/slo.yml, evaluated every"
        " 5 minutes over Prometheus' 30-day retention). Below zero the SLO is missed." + RULES_ONLY,
        [prom(f'{record}{{job="ragwatch"}}', "budget left")],
        unit="percentunit",
        steps=thresholds("red", (0.0, "orange"), (0.25, "yellow"), (0.5, "green")),
        decimals=1,
        size=(6, 6),
    )


def _sli_over_time(title: str, sli: str, link: Link) -> timeseries.Panel:
    objective = 1 - BUDGETS[sli]
    return timeseries_panel(
        title,
        f"1 - rag:sli_{sli}:ratio_rate over 1 hour and over 1 day; the dashed line is the {objective:.1%}"
        " objective." + RULES_ONLY,
        [prom(f"1 - {_rule(sli, window)}", window) for window in ("1h", "1d")],
        unit="percentunit",
        steps=thresholds("red", (objective, "green")),
        show_thresholds=True,
        decimals=3,
        links=[link],
    )


def _burn_rates(title: str, sli: str, link: Link) -> timeseries.Panel:
    return timeseries_panel(
        title,
        f"How fast each alert window spends the error budget: rag:sli_{sli}:ratio_rate<window> /"
        f" {BUDGETS[sli]:g}. At 1 the budget lasts exactly the SLO period; the alerts fire when both windows"
        " of a pair exceed 14.4 (1h, 5m), 6 (6h, 30m), 3 (1d, 2h) or 1 (3d, 6h)." + RULES_ONLY,
        [prom(f"{_rule(sli, window)} / {BUDGETS[sli]:g}", window) for window in SLO_WINDOWS],
        unit="suffix:×",
        steps=thresholds("green", *BURN_RATE_STEPS),
        show_thresholds=True,
        size=(12, 9),
        links=[link],
    )


def _burn_rates_now(title: str, sli: str) -> bargauge.Panel:
    return bargauge_panel(
        title,
        f"The current burn rate of every alert window (rag:sli_{sli}:ratio_rate<window> / {BUDGETS[sli]:g}),"
        " coloured by the alert thresholds." + RULES_ONLY,
        [prom(f"{_rule(sli, window)} / {BUDGETS[sli]:g}", window, instant=True) for window in SLO_WINDOWS],
        unit="suffix:×",
        steps=thresholds("green", *BURN_RATE_STEPS),
        decimals=2,
        max_value=20.0,
    )


def _by_environment(part: str, whole: str) -> str:
    return f"sum by ({ENV}) (increase({part}[$__range])) / sum by ({ENV}) (increase({whole}[$__range]))"


def build() -> dm.Dashboard:
    # The SLIs as the recording rules define them: /v1 requests without a 5xx; POST /v1/chat within 5.12 s.
    answered = series("rag_requests_total", 'endpoint=~"/v1/.+"')
    good = series("rag_requests_total", 'endpoint=~"/v1/.+"', 'status!~"5.."')
    chat = ('method="POST"', 'endpoint="/v1/chat"')
    chats = series("rag_request_duration_seconds_count", *chat)
    fast_chats = series("rag_request_duration_seconds_bucket", *chat, 'le="5.12"')

    panels = rows(
        [
            _sli_now("Availability (3 days)", "errors", "Share of /v1 requests answered without a 5xx"),
            _sli_now("Chat latency (3 days)", "latency_slow", "Share of POST /v1/chat requests answered within 5.12 s"),
            _budget_left("Availability error budget left", "rag:error_budget_remaining:availability"),
            _budget_left("Latency error budget left", "rag:error_budget_remaining:latency"),
        ],
        [
            _sli_over_time("Availability SLI", "errors", FAILED_REQUESTS),
            _sli_over_time("Chat latency SLI", "latency_slow", SLOW_CHATS),
        ],
        [
            _burn_rates("Availability burn rate", "errors", FAILED_REQUESTS),
            _burn_rates("Latency burn rate", "latency_slow", SLOW_CHATS),
        ],
        [
            _burn_rates_now("Availability burn rate now", "errors"),
            _burn_rates_now("Latency burn rate now", "latency_slow"),
        ],
        [
            bargauge_panel(
                "Availability by environment (raw counters)",
                "Share of /v1 requests answered without a 5xx over the selected time range, per environment, from"
                " rag_requests_total itself, so the environment and instance filters apply.",
                [prom(_by_environment(good, answered), "{{" + ENV + "}}", instant=True)],
                unit="percentunit",
                steps=thresholds("red", (1 - AVAILABILITY_BUDGET, "green")),
                decimals=3,
                min_value=0.9,
                max_value=1.0,
                links=[FAILED_REQUESTS],
            ),
            bargauge_panel(
                "Chat latency by environment (raw counters)",
                "Share of POST /v1/chat requests answered within 5.12 s over the selected time range, per environment,"
                ' from the le="5.12" bucket of rag_request_duration_seconds.',
                [prom(_by_environment(fast_chats, chats), "{{" + ENV + "}}", instant=True)],
                unit="percentunit",
                steps=thresholds("red", (1 - LATENCY_BUDGET, "green")),
                decimals=3,
                min_value=0.9,
                max_value=1.0,
                links=[SLOW_CHATS],
            ),
        ],
    )
    return dashboard(
        "ragwatch-slo",
        "ragwatch / SLOs",
        "Availability (99.5 % of /v1 requests without a 5xx) and chat latency (99 % of POST /v1/chat within"
        " 5.12 s): SLIs, error budget left and burn rates over the alert windows.",
        panels,
    )
