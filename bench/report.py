"""Turn the measurements into ``latest.json`` (every figure with its baseline and ratio), ``latest.md`` (the
tables) and ``latest.png`` (the chart), and refresh the results section of ``bench/README.md``."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

Op = Literal[">=", "<=", "=="]
SOAK_JSON = Path(__file__).resolve().parent / "results" / "soak.json"
"""What ``make soak`` last measured: a section of the report when it is there."""


@dataclass
class Figure:
    """One reported number, the number it is read against, and their ratio (``value / baseline``)."""

    id: str
    section: str
    label: str
    value: float
    unit: str
    baseline_label: str | None = None
    baseline_value: float | None = None
    ratio: float | None = None
    """The median of per-round ratios where the figure comes from rounds; else ``value / baseline``."""
    rounds: list[float] | None = None
    """Per-round ratios (or values), when the figure comes from alternating rounds."""

    def __post_init__(self) -> None:
        if self.ratio is None and self.baseline_value:
            self.ratio = self.value / self.baseline_value


@dataclass
class Target:
    id: str
    text: str
    measured: float
    op: Op
    threshold: float
    unit: str
    detail: str = ""

    @property
    def met(self) -> bool | None:
        if self.measured is None or math.isnan(self.measured):
            return None
        if self.op == ">=":
            return self.measured >= self.threshold
        if self.op == "<=":
            return self.measured <= self.threshold
        return self.measured == self.threshold

    @property
    def score(self) -> float:
        """How far past the line: 1 is exactly on target, above 1 is met (for either direction)."""
        if self.measured is None or math.isnan(self.measured):
            return float("nan")
        if self.op == ">=":
            return self.measured / self.threshold if self.threshold else float("nan")
        if self.op == "<=":
            if self.threshold == 0:
                return 1.0 if self.measured == 0 else 0.0
            return self.threshold / self.measured if self.measured else float("inf")
        return 1.0 if self.measured == self.threshold else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if unit == "ratio":
        return f"{value:.2f}"
    if unit == "x":
        return f"{value:.2f}×"
    if unit == "%":
        return f"{value:.2f} %"
    if unit == "recall":
        return f"{value:.3f}"
    magnitude = abs(value)
    text = f"{value:,.0f}" if magnitude >= 100 else f"{value:.1f}" if magnitude >= 10 else f"{value:.2f}"
    return f"{text} {unit}".strip()


def write_json(path: Path, meta: dict[str, Any], figures: list[Figure], targets: list[Target], details: Any) -> None:
    document = {
        "meta": meta,
        "targets": [t.as_dict() for t in targets],
        "figures": [asdict(f) for f in figures],
        "details": details,
    }
    path.write_text(json.dumps(document, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(type(value).__name__)


def markdown(
    meta: dict[str, Any],
    figures: list[Figure],
    targets: list[Target],
    details: dict[str, Any],
    soak_path: Path = SOAK_JSON,
) -> str:
    machine = meta["machine"]
    lines = [
        f"Run of {meta['date']} ({meta['mode']} mode, {meta['duration_s']:.0f} s): {machine['cpu_model']}, "
        f"{machine['cores']} cores; load generator on core {meta['placement']['load_core']}, server under "
        f"test on core {meta['placement']['server_core']}; {meta['rounds']} alternating round(s) per comparison.",
    ]
    noise = details.get("disturbance")
    if noise:
        lines[-1] += (
            f" Disturbance: in {noise['runs_over_5pct_elsewhere']} of {noise['runs']} load runs more than 5 % of the"
            f" server core went to other processes (worst {noise['max_others_on_server_core_share']:.0%}); hypervisor"
            f" steal at most {noise['max_steal_share']:.0%}."
        )
    lines += [
        "",
        "| Target | Measured | Status |",
        "|---|---|---|",
    ]
    for target in targets:
        status = {True: "met", False: "**missed**", None: "not measured"}[target.met]
        measured = _fmt(target.measured, target.unit)
        detail = f" ({target.detail})" if target.detail else ""
        lines.append(f"| {target.text} | {measured}{detail} | {status} |")
    lines += ["", "| Section | Figure | Value | Baseline | Ratio |", "|---|---|---|---|---|"]
    for figure in figures:
        baseline = (
            f"{figure.baseline_label}: {_fmt(figure.baseline_value, figure.unit)}" if figure.baseline_label else "–"
        )
        lines.append(
            f"| {figure.section} | {figure.label} | {_fmt(figure.value, figure.unit)} | {baseline} | "
            f"{_fmt(figure.ratio, 'ratio')} |"
        )
    memory = details.get("memory", {})
    if memory.get("rss_mib_by_phase"):
        phases = list(next(iter(memory["rss_mib_by_phase"].values())).keys())
        lines += ["", "Resident set size (MiB) after each phase:", ""]
        lines.append("| Process | " + " | ".join(phases) + " |")
        lines.append("|---|" + "---|" * len(phases))
        for process, values in memory["rss_mib_by_phase"].items():
            lines.append(f"| {process} | " + " | ".join(f"{values.get(p, 0):.0f}" for p in phases) + " |")
    implementations = details.get("implementations", {})
    if implementations:
        used = ", ".join(f"{name}: {v['loop']}/{v['http']}" for name, v in implementations.items())
        lines += ["", f"Event loop / HTTP parser per server: {used}."]
    lines += soak_section(soak_path)
    return "\n".join(lines) + "\n"


def _count(value: float | None, unit: str = "") -> str:
    """A whole number as one (``12``, ``3 responses``), anything else as :func:`_fmt` shows it."""
    if isinstance(value, int | float) and not math.isnan(value) and float(value).is_integer():
        singular = value == 1 and len(unit) > 2 and unit.endswith("s")
        return f"{int(value):,} {unit[:-1] if singular else unit}".strip()
    return _fmt(value, unit)


def soak_section(path: Path) -> list[str]:
    """The last ``make soak`` (``bench/results/soak.json``) as markdown lines; one line when there is none."""
    if not path.exists():
        return ["", "**Soak.** None recorded yet: `make soak` writes `bench/results/soak.json` and this section."]
    soak = json.loads(path.read_text())
    meta, plan, summary, restart = soak["meta"], soak["plan"], soak["summary"], soak["redis_restart"]
    shares = ", ".join(f"{kind} {share:.0%}" for kind, share in soak["mix"]["shares"].items())
    up = restart.get("service_reports_redis_up_after_s")
    lines = [
        "",
        f"**Soak** (`make soak`, {meta['date']}, {plan['minutes']:g} min): one `ragwatch serve` under a mix of "
        f"{shares} at {soak['rate']:,.0f} req/s, {plan['load_share']:.0%} of the "
        f"{soak['capacity']['requests_per_s']:,.0f} req/s a closed-loop burst of the same mix reached at the start; "
        "redis-server stopped "
        f"{restart.get('stopped_at_s', 0):.0f} s in for {restart.get('outage_s', 0):.0f} s, and the service used it "
        f"again {'never' if up is None else f'{up:.1f} s'} after its restart, by itself. RSS is compared after the "
        "warm-up, not from the process's start.",
        "",
        "| Soak target | Measured | Status |",
        "|---|---|---|",
    ]
    for found in soak["targets"]:
        measured = float("nan") if found["measured"] is None else found["measured"]
        target = Target(found["id"], found["text"], measured, found["op"], found["threshold"], found["unit"])
        status = {True: "met", False: "**missed**", None: "not measured"}[target.met]
        lines.append(f"| {target.text} | {_count(target.measured, target.unit)} | {status} |")
    rows = [
        ("RSS, median of the first and the last minute (MiB)", "rss_first_minute_median_mib",
         "rss_last_minute_median_mib"),
        ("RSS, first and last sample (MiB)", "rss_start_mib", "rss_end_mib"),
        ("Open file descriptors", "open_fds_start", "open_fds_end"),
        ("Threads", "threads_start", "threads_end"),
        ("Redis client connections", "redis_clients_start", "redis_clients_end"),
        ("LanceDB data files of the chunks table", "store_data_files_start", "store_data_files_end"),
    ]  # fmt: skip
    lines += ["", "| Soak, sampled every 10 s | Start | End |", "|---|---|---|"]
    lines += [f"| {label} | {_count(summary.get(a))} | {_count(summary.get(b))} |" for label, a, b in rows]
    errors = soak["errors"]
    period = "Minute" if plan["slice_s"] == 60 else f"{plan['slice_s']:g} s"
    expected = "; ".join(
        f"{route}: " + ", ".join(f"{n} × {status}" for status, n in statuses.items())
        for route, statuses in errors["expected_in_outage"].items()
    )
    lines += [
        "",
        f"Statuses: {', '.join(f'{n:,} × {status}' for status, n in errors['by_status'].items())}. During the outage, "
        f"as README's “When Redis fails” says: {expected or 'none'}. Unexpected: {errors['unexpected_5xx']} 5xx "
        f"({errors['status_500']} of them 500), {errors['unexpected_4xx']} 4xx; {summary['unanswered']:,} of "
        f"{summary['requests']:,} requests unanswered by the service's own count, {summary['shed']:.0f} shed.",
        "",
        f"| {period} | Requests/s | p50 (ms) | p99 (ms) | Non-2xx | Others on the server core |",
        "|---|---|---|---|---|---|",
    ]
    for minute in soak["slices"]:
        latency = minute["latency_ms"]
        lines.append(
            f"| {minute['slice'] + 1} | {_fmt(minute['achieved_rate'])} | {_fmt(latency['p50'])} | "
            f"{_fmt(latency['p99'])} | {minute['non_2xx']} | {minute['others_on_server_core_share']:.0%} |"
        )
    compared = summary["p99_minutes_compared"]
    lines += [
        "",
        f"p99 drift: {_fmt(summary['p99_first_ms'], 'ms')} (mean p99 of the first {compared} row(s) above), "
        f"{_fmt(summary['p99_last_ms'], 'ms')} (the last {compared}): {_fmt(summary['p99_drift'], 'x')}.",
    ]
    return lines


def chart(path: Path, figures: list[Figure], targets: list[Target], details: dict[str, Any]) -> None:
    import matplotlib  # noqa: PLC0415 - only the report needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, 3, figsize=(17, 6.2), gridspec_kw={"width_ratios": [1.0, 1.25, 1.1]})
    throughput = details.get("throughput_medians", {})
    names = [
        n
        for n in ("raw", "litestar", "guide", "cached_off", "cached_on", "cached_full", "uncached_off", "uncached_on")
        if n in throughput
    ]
    values = [throughput[n] for n in names]
    pretty = {
        "raw": "raw ASGI",
        "litestar": "bare Litestar",
        "guide": "guide's stack (FastAPI...)",
        "cached_off": "cached chat, telemetry off",
        "cached_on": "cached chat, telemetry on",
        "cached_full": "cached chat, every trace",
        "uncached_off": "uncached chat, telemetry off",
        "uncached_on": "uncached chat, telemetry on",
    }
    ax = axes[0]
    palette = {"raw": "#9aa5b1", "litestar": "#9aa5b1", "guide": "#b279a2", "cached_full": "#e45756"}
    colors = [palette.get(n, "#f58518" if n.endswith("_on") else "#4c78a8") for n in names]
    ax.barh([pretty[n] for n in names][::-1], values[::-1], color=colors[::-1])
    ax.set_xscale("log")
    ax.set_xlabel("requests/s at fixed concurrency (median of rounds, log scale)")
    ax.set_title("Throughput per variant")
    for y, value in enumerate(values[::-1]):
        ax.text(value, y, f" {value:,.0f}", va="center", fontsize=9)
    ax.set_xlim(right=max([*values, 1]) * 6)

    ax = axes[1]
    shown = [t for t in targets if not math.isnan(t.score)]
    scores = [min(t.score, 4.0) for t in shown]
    labels = [t.id.replace("_", " ") for t in shown]
    ax.barh(labels[::-1], scores[::-1], color=["#54a24b" if t.met else "#e45756" for t in shown][::-1])
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlabel("measured against target (1 = on the line; right of it = met; capped at 4)")
    ax.set_title("Targets")
    for y, target in enumerate(shown[::-1]):
        ax.text(min(target.score, 4.0), y, f" {_fmt(target.measured, target.unit)}", va="center", fontsize=8)
    ax.set_xlim(0, 4.6)

    ax = axes[2]
    retrieval = details.get("retrieval", {}).get("sizes", {})
    if retrieval:
        largest = max(retrieval, key=int)
        tenants = retrieval[largest]["query"]["tenants"]
        kinds = ["vector", "full_text", "hybrid", "numpy_exact"]
        width = 0.38
        for offset, (label, color) in enumerate((("large", "#4c78a8"), ("small", "#72b7b2"))):
            p95 = [tenants[label]["latency_ms"][k]["p95"] for k in kinds]
            xs = [i + (offset - 0.5) * width for i in range(len(kinds))]
            ax.bar(xs, p95, width, label=f"{label} tenant ({tenants[label]['rows']:,} rows)", color=color)
        ax.set_xticks(range(len(kinds)), ["vector", "full-text", "hybrid", "NumPy exact"])
        ax.set_ylabel("p95 latency (ms)")
        ax.set_title(f"Retrieval at {int(largest):,} chunks")
        ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


RESULTS_START = "<!-- results:start -->"
RESULTS_END = "<!-- results:end -->"


def refresh_readme(readme: Path, table: str) -> None:
    """Replace the results section of ``bench/README.md`` (between its markers) with ``table``."""
    if not readme.exists():
        return
    text = readme.read_text()
    pattern = re.compile(re.escape(RESULTS_START) + r".*?" + re.escape(RESULTS_END), flags=re.DOTALL)
    if not pattern.search(text):
        return
    block = f"{RESULTS_START}\n{table}{RESULTS_END}"
    readme.write_text(pattern.sub(lambda _: block, text))
