"""``python dashboards/generate.py [--check]``: write the dashboards' JSON files, or only check them."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from . import render

DASHBOARD_DIR = Path(__file__).resolve().parent.parent


def main(argv: Sequence[str], directory: Path = DASHBOARD_DIR) -> int:
    """Writes every dashboard file that differs from what it should hold; with ``--check``, writes nothing and
    exits 1 when one differs (or is missing)."""
    rendered = render()
    stale = [name for name, text in rendered.items() if _read(directory / name) != text]
    if "--check" in argv:
        if stale:
            print(f"out of date: {', '.join(stale)}; run python dashboards/generate.py", file=sys.stderr)
            return 1
        print("dashboards are up to date")
        return 0
    for name in stale:
        (directory / name).write_text(rendered[name], encoding="utf-8")
    print(f"wrote {', '.join(rendered)} ({len(stale)} changed)")
    return 0


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.exists() else None
