"""The service level objectives that alerts/rules/slo.yml implements, as the dashboards show them."""

from __future__ import annotations

from .panels import thresholds

AVAILABILITY_BUDGET = 0.005  # 99.5 % of /v1 requests answered without a 5xx
LATENCY_BUDGET = 0.01  # 99 % of POST /v1/chat requests answered within 5.12 s
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
# Burn rates at which the multiwindow alerts fire: 14.4 (1h and 5m), 6 (6h and 30m), 3 (1d and 2h), 1 (3d and 6h).
BURN_RATE_STEPS = ((1.0, "yellow"), (3.0, "orange"), (6.0, "red"), (14.4, "dark-red"))

REQUEST_LATENCY = thresholds("green", (2.56, "yellow"), (5.12, "red"))  # 5.12 s: the chat latency SLO
