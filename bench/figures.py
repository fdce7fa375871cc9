"""From raw measurements to figures (each with its baseline and ratio) and to the targets of the issue."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.http_phases import RoundsResult
from bench.report import Figure, Target
from bench.stats import median, median_ratio

MS = 1000.0
RPS = "requests_per_s"


@dataclass
class Collected:
    figures: list[Figure] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)


def compare(result: RoundsResult, name: str, base: str, *, key: str, section: str, label: str, unit: str,
            scale: float = 1.0) -> Figure:  # fmt: skip
    """``name`` against ``base``: both medians, and the median of their per-round ratios."""
    values = [v / scale for v in result.values(name, key)]
    baseline = [v / scale for v in result.values(base, key)]
    ratio, ratios = median_ratio(values, baseline)
    return Figure(
        id=f"{name}_{key}_vs_{base}",
        section=section,
        label=label,
        value=median(values),
        unit=unit,
        baseline_label=base,
        baseline_value=median(baseline),
        ratio=ratio,
        rounds=[round(r, 4) for r in ratios],
    )


def single(result: RoundsResult, name: str, *, key: str, section: str, label: str, unit: str,
           scale: float = 1.0) -> Figure:  # fmt: skip
    values = [v / scale for v in result.values(name, key)]
    return Figure(f"{name}_{key}", section, label, median(values), unit, rounds=[round(v, 3) for v in values])


def throughput(results: dict[str, Any], out: Collected, details: dict[str, Any]) -> None:
    rounds = RoundsResult(results["throughput"])
    uncached = RoundsResult(results["uncached"])
    out.figures.append(single(rounds, "raw", key=RPS, section="Ceilings", label="Raw ASGI on uvicorn", unit="req/s"))
    out.figures.append(
        compare(rounds, "litestar", "raw", key=RPS, section="Ceilings", label="Bare Litestar route", unit="req/s")
    )
    section = "Cached chat"
    out.figures.append(
        compare(rounds, "cached_off", "litestar", key=RPS, section=section, label="Telemetry off", unit="req/s")
    )
    cached_on = compare(rounds, "cached_on", "litestar", key=RPS, section=section, label="Telemetry on", unit="req/s")
    on_off = compare(
        rounds, "cached_on", "cached_off", key=RPS, section=section, label="Telemetry on vs off", unit="req/s"
    )
    full_off = compare(
        rounds,
        "cached_full",
        "cached_off",
        key=RPS,
        section=section,
        label="Every trace exported vs off",
        unit="req/s",
    )
    off_litestar = out.figures[-1]
    guide = compare(
        rounds, "cached_on", "guide", key=RPS, section=section, label="Telemetry on vs the guide's stack", unit="req/s"
    )
    out.figures += [cached_on, on_off, full_off, guide]
    section = "Uncached chat"
    out.figures.append(single(uncached, "uncached_off", key=RPS, section=section, label="Telemetry off", unit="req/s"))
    uncached_on_off = compare(
        uncached, "uncached_on", "uncached_off", key=RPS, section=section, label="Telemetry on vs off", unit="req/s"
    )
    out.figures.append(uncached_on_off)
    details["throughput_medians"] = {
        name: median(result.values(name, RPS)) for result in (rounds, uncached) for name in result.runs
    }
    out.targets += [
        Target("cached_on_vs_litestar", "Cached chat with full telemetry >= 0.35 of bare Litestar (req/s)",
               cached_on.ratio or 0.0, ">=", 0.35, "ratio"),
        Target("cached_telemetry_cost", "Cached chat: telemetry on (default sampling) >= 0.70 of off (req/s)",
               on_off.ratio or 0.0, ">=", 0.70, "ratio"),
        Target("cached_full_tracing_cost", "Cached chat: every trace exported >= 0.50 of telemetry off (req/s)",
               full_off.ratio or 0.0, ">=", 0.50, "ratio"),
        Target("uncached_telemetry_cost", "Uncached chat: telemetry on >= 0.97 of off (req/s)",
               uncached_on_off.ratio or 0.0, ">=", 0.97, "ratio"),
        Target("cached_off_vs_litestar", "Cached chat, telemetry off >= 0.25 of bare Litestar (req/s)",
               off_litestar.ratio or 0.0, ">=", 0.25, "ratio"),
        Target("cached_on_vs_guide", "Cached chat, telemetry on >= 1.5x the guide's untraced stack (req/s)",
               guide.ratio or 0.0, ">=", 1.5, "ratio"),
    ]  # fmt: skip


def fixed_rate(results: dict[str, Any], out: Collected) -> None:
    fixed = results["fixed_rate"]
    ceilings = RoundsResult(fixed["ceilings"]["runs"])
    rate = fixed["ceilings"]["rate"]
    cached = RoundsResult(fixed["cached"]["runs"])
    cached_rate = fixed["cached"]["rate"]
    for key, name in (("p50_us", "p50"), ("p99_us", "p99")):
        out.figures.append(
            single(ceilings, "raw", key=key, section="Ceilings", label=f"Raw ASGI {name} at {rate:,.0f}/s", unit="ms",
                   scale=MS)
        )  # fmt: skip
        out.figures.append(
            compare(ceilings, "litestar", "raw", key=key, section="Ceilings",
                    label=f"Bare Litestar {name} at {rate:,.0f}/s", unit="ms", scale=MS)
        )  # fmt: skip
    for key, name in (("p50_us", "p50"), ("p99_us", "p99")):
        out.figures.append(
            single(cached, "cached_off", key=key, section="Cached chat",
                   label=f"Telemetry off, {name} at {cached_rate:,.0f}/s", unit="ms", scale=MS)
        )  # fmt: skip
        out.figures.append(
            compare(cached, "cached_on", "cached_off", key=key, section="Cached chat",
                    label=f"Telemetry on, {name} at {cached_rate:,.0f}/s", unit="ms", scale=MS)
        )  # fmt: skip
        out.figures.append(
            compare(cached, "cached_full", "cached_off", key=key, section="Cached chat",
                    label=f"Every trace exported, {name} at {cached_rate:,.0f}/s", unit="ms", scale=MS)
        )  # fmt: skip
    p99 = compare(cached, "cached_on", "cached_off", key="p99_us", section="Cached chat", label="p99", unit="ms",
                  scale=MS)  # fmt: skip
    out.targets.append(
        Target("cached_p99_cost", f"Cached chat p99 at {cached_rate:,.0f}/s: telemetry on <= 3x off", p99.ratio or 0.0,
               "<=", 3.0, "ratio")
    )  # fmt: skip


def telemetry(results: dict[str, Any], out: Collected) -> None:
    checked = results["telemetry"]
    dropped = sum(s["spans_dropped_queue_full"] for s in checked["servers"])
    logs_dropped = sum(s["log_records_dropped_queue_full"] for s in checked["servers"])
    processed = sum(s["spans_processed"] for s in checked["servers"])
    failures = sum(s["export_failures"] for s in checked["servers"])
    served = sum(s["requests_served"] for s in checked["servers"])
    received = checked["sink"]["spans"]
    records = checked["sink"]["log_records"]
    out.figures += [
        Figure("spans_received", "Telemetry", "Spans received by the OTLP sink", received, "spans",
               "handed to the exporter", processed),
        Figure("spans_per_request", "Telemetry", "Spans exported per request (every telemetry-on variant)",
               received / served if served else float("nan"), "spans"),
        Figure("log_records_per_request", "Telemetry", "OTLP log records per request (access log and others)",
               records / served if served else float("nan"), "records"),
        Figure("spans_dropped", "Telemetry", "Spans dropped (queue full)", dropped, "spans"),
        Figure("logs_dropped", "Telemetry", "Log records dropped (queue full)", logs_dropped, "records"),
        Figure("export_failures", "Telemetry", "Failed OTLP exports", failures, "exports"),
    ]  # fmt: skip
    for server in checked["servers"]:
        for reason, count in server.get("sampling", {}).items():
            out.figures.append(
                Figure(f"sampled_{server['variant']}_{reason}", "Telemetry",
                       f"Traces {reason.replace('/', ' for ')}, {server['variant']}", count, "traces")
            )  # fmt: skip
    lost = dropped + max(processed - received, 0)
    out.targets.append(
        Target("dropped_spans", "No dropped spans with telemetry on", lost, "<=", 0, "spans",
               f"{dropped:,} dropped at the queue; {received:,} spans arrived for {served:,} requests")
    )  # fmt: skip


def retrieval(results: dict[str, Any], out: Collected) -> None:
    sizes = results["retrieval"]["sizes"]
    for size, entry in sizes.items():
        query = entry["query"]
        section = f"Retrieval {int(size):,}"
        ann = "ANN (HNSW-SQ)" if query["ann_index"] else "exact (below the ANN threshold)"
        for label, tenant in query["tenants"].items():
            latency = tenant["latency_ms"]
            who = f"{label} tenant ({tenant['rows']:,} rows)"
            for kind, name in (("vector", f"vector, {ann}"), ("full_text", "full-text"), ("hybrid", "hybrid")):
                for point in ("p50", "p95"):
                    out.figures.append(
                        Figure(f"retrieval_{size}_{label}_{kind}_{point}", section, f"{who}: {name} {point}",
                               latency[kind][point], "ms", f"NumPy exact {point}", latency["numpy_exact"][point])
                    )  # fmt: skip
            out.figures.append(
                Figure(f"retrieval_{size}_{label}_recall", section, f"{who}: recall@10 of vector search",
                       tenant["recall_at_10"], "recall", "exact search", 1.0)
            )  # fmt: skip
        for kind in ("vector", "full_text", "hybrid"):
            small = query["tenants"]["small"]["latency_ms"][kind]["p95"]
            large = query["tenants"]["large"]["latency_ms"][kind]["p95"]
            out.figures.append(
                Figure(f"retrieval_{size}_small_vs_large_{kind}", section, f"Small vs large tenant, {kind} p95", small,
                       "ms", "large tenant", large)
            )  # fmt: skip
    if not sizes:
        return
    largest = max(sizes, key=int)
    tenants = sizes[largest]["query"]["tenants"]
    worst = max(t["latency_ms"]["vector"]["p95"] / t["latency_ms"]["numpy_exact"]["p95"] for t in tenants.values())
    recall = min(t["recall_at_10"] for t in tenants.values())
    slowest = max(
        tenants["small"]["latency_ms"][k]["p95"] / tenants["large"]["latency_ms"][k]["p95"]
        for k in ("vector", "full_text", "hybrid")
    )
    out.targets += [
        Target("retrieval_vs_numpy", f"Vector search p95 at {int(largest):,} chunks no slower than exact NumPy scan",
               worst, "<=", 1.0, "x", "worst tenant, as a multiple of its NumPy p95"),
        Target("recall_at_10", f"Recall@10 at {int(largest):,} chunks >= 0.95", recall, ">=", 0.95, "recall",
               "worst tenant"),
        Target("small_vs_large_tenant", "Small tenants no slower than large ones (p95)", slowest, "<=", 1.0, "x",
               "worst of vector, full-text, hybrid; small p95 as a multiple of large"),
    ]  # fmt: skip


def ingestion(results: dict[str, Any], out: Collected) -> None:
    measured = results["ingestion"]
    batched = Figure("ingest_batched", "Ingestion", "Batched writes (100 rows each)", measured["batched_chunks_per_s"],
                     "chunks/s", "one row at a time", measured["single_chunks_per_s"])  # fmt: skip
    out.figures += [
        batched,
        Figure("ingest_single", "Ingestion", "One row at a time", measured["single_chunks_per_s"], "chunks/s"),
        Figure("ingest_embedder", "Ingestion", "Default offline embedder (WordLlama) alone",
               measured["embedder_chunks_per_s"], "chunks/s"),
    ]  # fmt: skip
    out.targets.append(
        Target("ingestion", "Ingestion >= 1,000 chunks/s offline (batched)", batched.value, ">=", 1000, "chunks/s")
    )


def uploads(results: dict[str, Any], out: Collected) -> None:
    measured = results["uploads"]
    empty, loaded, pdf = measured["empty_store"], measured["loaded_store"], measured["pdf"]
    clients = measured["clients"]
    stored = measured["preload"]["chunks"]
    section = "Uploads"
    empty_rate = Figure("uploads_empty", section, f"Abstracts, one per request, {clients} clients, empty store",
                        empty["documents_per_s"], "docs/s")  # fmt: skip
    loaded_rate = Figure("uploads_loaded", section, f"The same with {stored:,} chunks stored",
                         loaded["documents_per_s"], "docs/s", "empty store", empty["documents_per_s"])  # fmt: skip
    out.figures += [
        empty_rate,
        loaded_rate,
        Figure("uploads_preload", section, "Documents of 100 chunks, one client", measured["preload"]["chunks_per_s"],
               "chunks/s"),
        Figure("uploads_pdf", section, f"{pdf['pages']}-page PDF from upload to searchable", pdf["searchable_seconds"],
               "s", "its upload alone", pdf["upload_seconds"]),
    ]  # fmt: skip
    out.targets += [
        Target("uploads_rate", f"Abstracts uploaded one per request by {clients} clients >= 200 docs/s",
               empty_rate.value, ">=", 200, "docs/s"),
        Target("uploads_loaded", f"... with {stored:,} chunks stored >= 0.8 of the empty store's rate",
               loaded_rate.ratio or 0.0, ">=", 0.8, "ratio"),
        Target("uploads_pdf", f"A {pdf['pages']}-page text PDF parsed and searchable in under 10 s",
               pdf["searchable_seconds"], "<=", 10.0, "s"),
    ]  # fmt: skip


def redis(results: dict[str, Any], out: Collected) -> None:
    counts = results["redis"]["counts"]
    latency = results["redis"]["latency"]
    redis_p50 = latency["cached_chat_redis_ms"]["p50"]
    chat_p50 = median(RoundsResult(results["fixed_rate"]["cached"]["runs"]).values("cached_on", "p50_us")) / MS
    out.figures += [
        Figure("redis_client_commands", "Redis", "Commands sent per cached chat",
               counts["client_commands_per_request"], "commands"),
        Figure("redis_script_commands", "Redis", "Commands run inside the rate-limit script per cached chat",
               counts["script_commands_per_request"], "commands"),
        Figure("redis_round_trips", "Redis", "Round trips per cached chat", counts["round_trips_per_request"],
               "trips"),
        Figure("redis_latency", "Redis", "Redis time per cached chat, p50", redis_p50, "ms", "bare PING p50",
               latency["ping_ms"]["p50"]),
        Figure("redis_share", "Redis", "Redis time per cached chat against the chat's own p50", redis_p50, "ms",
               "cached chat p50, telemetry on, fixed rate", chat_p50),
    ]  # fmt: skip
    commands = counts["client_commands_per_request"]
    trips = counts["round_trips_per_request"]
    # Means over many requests, minus what idle servers sent meanwhile: read to one decimal.
    out.targets += [
        Target("redis_commands", "<= 2 Redis commands per cached chat", round(commands, 1), "<=", 2, "commands",
               f"mean {commands:.3f}, plus {counts['script_commands_per_request']:.1f} run inside the script"),
        Target("redis_round_trips", "... in 1 round trip", round(trips, 1), "<=", 1, "trips",
               f"mean {trips:.3f} socket reads per chat"),
    ]  # fmt: skip


def memory(results: dict[str, Any], out: Collected) -> None:
    soak = results["soak"]
    seconds = soak["seconds"]
    out.figures += [
        Figure("soak_rss_growth", "Memory", f"RSS growth over a {seconds:.0f} s soak (cached chat, telemetry on)",
               soak["rss_growth"] * 100, "%"),
        Figure("soak_rss_last", "Memory", "RSS at the end of the soak", soak["rss_last_mib"], "MiB",
               "start of the soak", soak["rss_first_mib"]),
    ]  # fmt: skip
    out.targets.append(
        Target("rss_growth", f"RSS growth under 5 % over the soak ({seconds:.0f} s here; 5 min asked)",
               soak["rss_growth"] * 100, "<=", 5.0, "%")
    )  # fmt: skip


def disturbance(results: dict[str, Any]) -> dict[str, Any]:
    """How disturbed the measured runs were: the share of the server core that went elsewhere, and steal."""
    runs = [
        run
        for group in (results["throughput"], results["uncached"], *(v["runs"] for v in results["fixed_rate"].values()))
        for variant_runs in group.values()
        for run in variant_runs
    ]
    others = [run.get("others_on_server_core_share", 0.0) for run in runs]
    steal = [run.get("steal_share", 0.0) for run in runs]
    return {
        "runs": len(runs),
        "max_others_on_server_core_share": max(others, default=0.0),
        "median_others_on_server_core_share": median(others),
        "max_steal_share": max(steal, default=0.0),
        "runs_over_5pct_elsewhere": sum(1 for value in others if value > 0.05),
    }


def build(results: dict[str, Any]) -> tuple[list[Figure], list[Target], dict[str, Any]]:
    out = Collected()
    details: dict[str, Any] = dict(results)
    details["disturbance"] = disturbance(results)
    throughput(results, out, details)
    fixed_rate(results, out)
    telemetry(results, out)
    retrieval(results, out)
    ingestion(results, out)
    if "uploads" in results:  # saved results from before the uploads phase still render
        uploads(results, out)
    redis(results, out)
    memory(results, out)
    return out.figures, out.targets, details
