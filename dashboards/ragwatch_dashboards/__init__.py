"""ragwatch's Grafana dashboards, written with Grafana's typed builders (``grafana-foundation-sdk``).

One module per dashboard (``service_overview``, ``rag_pipeline``, ``tenants``, ``slo``, ``answer_quality``),
each with the file it is written to (``FILE``) and a ``build()`` returning the dashboard; what they share is in
``queries`` (data sources, PromQL selectors and targets), ``links`` (links to traces in Tempo), ``panels`` (the
panel kinds, thresholds and the grid), ``objectives`` (the SLOs) and ``frame`` (tags, variables, links and the
dashboard itself). ``render()`` gives each file's exact text; ``dashboards/generate.py`` writes or checks them.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm

from . import answer_quality, rag_pipeline, service_overview, slo, tenants

__all__ = ["DASHBOARDS", "render"]

DASHBOARDS: dict[str, Callable[[], dm.Dashboard]] = {
    module.FILE: module.build for module in (service_overview, rag_pipeline, tenants, slo, answer_quality)
}
"""Each dashboard's file name (in dashboards/) and its builder."""


def render() -> dict[str, str]:
    """Each dashboard's file name and the exact text the file should hold."""
    return {
        name: json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        for name, build in DASHBOARDS.items()
    }
