"""Writes ragwatch's Grafana dashboards (``dashboards/*.json``) from the typed builders of the package
``dashboards/ragwatch_dashboards`` (Grafana's ``grafana-foundation-sdk``, installed by ``make test``).

Run ``python dashboards/generate.py`` after changing the package and commit the JSON it writes;
``python dashboards/generate.py --check`` only reports whether the committed files are current (a test checks
the same). Metric names come from ``docs/metrics.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the package beside this file, whether run as a script or loaded by a test
    sys.path.insert(0, str(HERE))

from ragwatch_dashboards import DASHBOARDS, render  # noqa: E402
from ragwatch_dashboards.cli import main  # noqa: E402

__all__ = ["DASHBOARDS", "main", "render"]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
