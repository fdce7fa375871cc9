"""Small statistics shared by the phases."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> tuple[float, list[float]]:
    """The median of per-round ratios, and the ratios themselves (rounds paired by position)."""
    ratios = [n / d for n, d in zip(numerators, denominators, strict=True) if d]
    return median(ratios), ratios


def percentiles_ms(samples_s: Sequence[float], points: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """Percentiles of durations given in seconds, in milliseconds, keyed ``p50``, ``p95``..."""
    if not samples_s:
        return {f"p{p:g}": float("nan") for p in points}
    values = np.percentile(np.asarray(samples_s) * 1000, points)
    return {f"p{p:g}": round(float(v), 3) for p, v in zip(points, values, strict=True)}


def rotated(items: Sequence[str], round_index: int) -> list[str]:
    """``items`` rotated by the round number, so each variant takes every position across rounds."""
    shift = round_index % len(items)
    return [*items[shift:], *items[:shift]]
