"""The HTTP phases: requests/s at fixed concurrency, latency at a fixed rate, the telemetry check, the soak.

Rounds alternate variants (each round starts one variant later) and every comparison is the median of
per-round ratios, so a noisy neighbour slowing the machine for a while moves both sides of a ratio alike.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.fleet import Fleet
from bench.load import run_pacer, run_wrk
from bench.procs import Disturbance, rss_bytes
from bench.stats import median, rotated

SETTLE_S = 0.5
"""Pause between runs, so a server's leftovers (a span batch being exported) do not land in the next run."""


@dataclass
class Options:
    rounds: int
    run_s: float
    warmup_s: float
    """0 skips the warm-up runs (quick mode: the set-up requests already warmed each process)."""
    concurrency: int
    uncached_concurrency: int
    uncached_run_s: float
    fixed_rate_fraction: float
    soak_s: float
    settle_s: float = SETTLE_S


@dataclass
class RoundsResult:
    """Per-variant runs, in round order."""

    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def values(self, variant: str, key: str) -> list[float]:
        return [float(run[key]) for run in self.runs[variant]]


def throughput_rounds(
    fleet: Fleet, variants: list[str], opts: Options, work: Path, *, concurrency: int, run_s: float
) -> RoundsResult:
    """Warm each variant, then ``opts.rounds`` rounds of one wrk run per variant."""
    result = RoundsResult({name: [] for name in variants})
    for name in variants if opts.warmup_s > 0 else []:
        server = fleet.servers[name]
        with fleet.scraping(name):
            warm = run_wrk(
                server.port,
                fleet.requests[name],
                work / f"{name}.lua",
                concurrency=concurrency,
                duration_s=opts.warmup_s,
            )
        fleet.served[name] += warm.requests
        time.sleep(opts.settle_s)
    for round_index in range(opts.rounds):
        for name in rotated(variants, round_index):
            server = fleet.servers[name]
            watch = Disturbance(server.pid)
            with fleet.scraping(name):
                outcome = run_wrk(
                    server.port, fleet.requests[name], work / f"{name}.lua", concurrency=concurrency, duration_s=run_s
                )
            fleet.served[name] += outcome.requests
            run = {**outcome.as_dict(), **watch.finish()}
            run["round"] = round_index
            result.runs[name].append(run)
            if outcome.non_2xx or outcome.socket_errors:
                print(f"    ! {name}: {outcome.non_2xx} non-2xx, {outcome.socket_errors} socket errors")
            time.sleep(opts.settle_s)
    return result


def fixed_rate_rounds(
    fleet: Fleet, variants: list[str], rate: float, opts: Options, work: Path, *, run_s: float
) -> RoundsResult:
    """``opts.rounds`` rounds of one paced run per variant at ``rate`` requests/s."""
    result = RoundsResult({name: [] for name in variants})
    for round_index in range(opts.rounds):
        for name in rotated(variants, round_index):
            server = fleet.servers[name]
            watch = Disturbance(server.pid)
            with fleet.scraping(name):
                run = run_pacer(server.port, fleet.requests[name], work, rate=rate, duration_s=run_s)
            run.update(watch.finish())
            fleet.served[name] += run["completed"]
            run["round"] = round_index
            run["p50_us"] = run["latency_us"]["p50"]
            run["p99_us"] = run["latency_us"]["p99"]
            result.runs[name].append(run)
            if run["non_2xx"] or run["errors"]:
                print(f"    ! {name}: {run['non_2xx']} non-2xx, {run['errors']} errors at {rate:.0f}/s")
            time.sleep(opts.settle_s)
    return result


def summarize(result: RoundsResult, key: str) -> dict[str, float]:
    return {name: median(result.values(name, key)) for name in result.runs}


# --- telemetry: were spans dropped? -------------------------------------------------------------------------


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def wait_for_exports(fleet: Fleet, limit_s: float = 8.0) -> None:
    """Give the batch processors time to send what they hold (their schedule delay is 5 s)."""
    deadline = time.monotonic() + limit_s
    previous = -1
    while time.monotonic() < deadline:
        time.sleep(1.0)
        spans = fleet.sink.stats()["spans"]
        if spans == previous:
            return
        previous = spans


def telemetry_check(fleet: Fleet, name: str) -> dict[str, Any]:
    """What a telemetry-on server says it exported and dropped (the SDK's own counters on ``/metrics``):
    spans handed to the exporter, spans and log records dropped because a queue was full, failed exports."""
    processed = dropped = failures = 0.0
    logs_dropped = 0.0
    sampling: dict[str, float] = {}
    for sample, labels, value in _samples(fleet.metrics_text(name)):
        if sample == "rag_traces_sampled_total":
            reason = f"{labels.get('decision')}/{labels.get('reason')}"
            sampling[reason] = sampling.get(reason, 0.0) + value
        if sample == "otel_sdk_processor_span_processed_total":
            if labels.get("error_type"):
                dropped += value
            else:
                processed += value
        elif sample == "otel_sdk_processor_log_processed_total" and labels.get("error_type"):
            logs_dropped += value
        elif sample == "rag_telemetry_export_failures_total":
            failures += value
    return {
        "variant": name,
        "requests_served": fleet.served[name],
        "spans_processed": int(processed),
        "spans_dropped_queue_full": int(dropped),
        "log_records_dropped_queue_full": int(logs_dropped),
        "export_failures": int(failures),
        "sampling": {reason: int(count) for reason, count in sorted(sampling.items())},
    }


# --- soak ---------------------------------------------------------------------------------------------------


def soak(fleet: Fleet, name: str, rate: float, seconds: float, work: Path) -> dict[str, Any]:
    """Fixed-rate load for ``seconds``; the server's RSS every few seconds, growth from first to last sample."""
    server = fleet.servers[name]
    samples: list[tuple[float, int]] = []
    done = threading.Event()
    interval = max(1.0, min(5.0, seconds / 12))

    def sample() -> None:
        started = time.monotonic()
        while True:
            samples.append((round(time.monotonic() - started, 1), rss_bytes(server.pid)))
            if done.wait(interval):
                break
        samples.append((round(time.monotonic() - started, 1), rss_bytes(server.pid)))

    sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    sampler.start()
    with fleet.scraping(name):
        run = run_pacer(server.port, fleet.requests[name], work, rate=rate, duration_s=seconds)
    fleet.served[name] += run["completed"]
    done.set()
    sampler.join()
    first, last = samples[0][1], samples[-1][1]
    return {
        "variant": name,
        "seconds": seconds,
        "rate": round(rate, 1),
        "completed": run["completed"],
        "errors": run["errors"] + run["non_2xx"],
        "latency_us": run["latency_us"],
        "rss_samples": [{"t_s": t, "rss_mib": round(v / 2**20, 1)} for t, v in samples],
        "rss_first_mib": round(first / 2**20, 1),
        "rss_last_mib": round(last / 2**20, 1),
        "rss_growth": round((last - first) / first, 4) if first else float("nan"),
    }
