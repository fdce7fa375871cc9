"""``python -m bench.run``: the whole benchmark, one command, about twelve minutes on two cores.

Phases, in order: retrieval (10,000 and 100,000 chunks), ingestion, uploads over HTTP (abstracts into an empty
and a loaded store, a 100-page PDF), then the HTTP fleet (ceilings, cached
and uncached chat with telemetry on and off, fixed-rate latency, Redis cost, the memory soak). Writes
``bench/results/latest.json``, ``latest.md`` and ``latest.png``. ``--quick`` is a short smoke run of every
phase (about 40 seconds) to check that the harness works; its numbers are not meant to be read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import figures as assemble
from bench import uploads
from bench.fleet import Fleet
from bench.http_phases import (
    Options,
    fixed_rate_rounds,
    soak,
    summarize,
    telemetry_check,
    throughput_rounds,
    wait_for_exports,
)
from bench.ingestion import PER_DOCUMENT
from bench.load import pacer_binary, wrk_version
from bench.procs import LOAD_CORE, ROOT, SERVER_CORE, pinned
from bench.redis_cost import count_per_request
from bench.report import chart, markdown, refresh_readme, write_json

HERE = Path(__file__).resolve().parent


@dataclass
class Profile:
    http: Options
    retrieval_sizes: list[int]
    ann_min_rows: int
    queries: int
    ingest_documents: int
    ingest_single_rows: int
    kb_chunks: int
    questions: int
    redis_requests: int
    redis_rate: float
    redis_iterations: int
    upload_documents: int
    preload_chunks: int
    pdf_pages: int


def profile(quick: bool, args: argparse.Namespace) -> Profile:
    if quick:
        http = Options(
            rounds=1,
            run_s=1,
            warmup_s=0,
            concurrency=32,
            uncached_concurrency=8,
            uncached_run_s=1,
            fixed_rate_fraction=0.6,
            soak_s=args.soak_seconds or 3,
            settle_s=0.2,
        )
        chosen = Profile(
            http=http,
            retrieval_sizes=[2_000],
            ann_min_rows=1_000,  # so that the ANN path is exercised on the small table
            queries=20,
            ingest_documents=3,
            ingest_single_rows=20,
            kb_chunks=1_000,
            questions=10,
            redis_requests=200,
            redis_rate=400,
            redis_iterations=300,
            upload_documents=100,
            preload_chunks=5_000,
            pdf_pages=20,
        )
    else:
        http = Options(
            rounds=args.rounds,
            run_s=5,
            warmup_s=2,
            concurrency=32,
            uncached_concurrency=8,
            uncached_run_s=5,
            fixed_rate_fraction=0.6,
            soak_s=args.soak_seconds or 60,
        )
        chosen = Profile(
            http=http,
            retrieval_sizes=[10_000, 100_000],
            ann_min_rows=50_000,  # the service's RAGWATCH_ANN_INDEX_MIN_ROWS default
            queries=200,
            ingest_documents=30,
            ingest_single_rows=150,
            kb_chunks=10_000,
            questions=20,
            redis_requests=1_000,
            redis_rate=400,
            redis_iterations=3_000,
            upload_documents=1_000,
            preload_chunks=50_000,
            pdf_pages=100,
        )
    if args.retrieval_sizes:
        chosen.retrieval_sizes = args.retrieval_sizes
    return chosen


def check_prerequisites() -> None:
    missing = [tool for tool in ("wrk", "redis-server", "taskset") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"bench: missing {', '.join(missing)} (make bench installs wrk with apt-get when run as root)")
    if (os.cpu_count() or 1) < 2:
        sys.exit("bench: needs two cores (one for the load generator, one for the server under test)")


def run_step(argv: list[str], *, core: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(["taskset", "-c", core, *argv], cwd=ROOT, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"step failed ({done.returncode}): {' '.join(argv)}")


def retrieval_phase(prof: Profile, work: Path) -> dict[str, Any]:
    sizes: dict[str, Any] = {}
    # The NumPy baseline runs on the current OpenBLAS kernel: the machine's OPENBLAS_* overrides (a guard
    # for old builds) would slow it, and the baseline should be the best plain NumPy can do.
    blas_env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    for rows in prof.retrieval_sizes:
        directory = work / f"retrieval-{rows}"
        built, queried = work / f"retrieval-build-{rows}.json", work / f"retrieval-query-{rows}.json"
        base = [sys.executable, "-m", "bench.retrieval"]
        print(f"  building {rows:,} chunks (ANN index from {prof.ann_min_rows:,} rows)", flush=True)
        build = [*base, "build", "--dir", str(directory), "--rows", str(rows)]
        build += ["--ann-min-rows", str(prof.ann_min_rows), "--out", str(built)]
        run_step(build, core=f"{LOAD_CORE},{SERVER_CORE}")
        print(f"  querying {rows:,} chunks", flush=True)
        run_step(
            [*base, "query", "--dir", str(directory), "--queries", str(prof.queries), "--out", str(queried)],
            core=str(SERVER_CORE),
            env=blas_env,
        )
        sizes[str(rows)] = {"build": json.loads(built.read_text()), "query": json.loads(queried.read_text())}
        shutil.rmtree(directory, ignore_errors=True)
    return {"sizes": sizes, "queries_per_tenant": prof.queries}


def ingestion_phase(prof: Profile, work: Path) -> dict[str, Any]:
    out = work / "ingestion.json"
    argv = [sys.executable, "-m", "bench.ingestion", "--dir", str(work / "ingestion")]
    argv += ["--batched-documents", str(prof.ingest_documents), "--single-rows", str(prof.ingest_single_rows)]
    run_step([*argv, "--out", str(out)], core=str(SERVER_CORE))
    result: dict[str, Any] = json.loads(out.read_text())
    result["chunks_per_document_batched"] = PER_DOCUMENT
    return result


def uploads_phase(prof: Profile, work: Path) -> dict[str, Any]:
    print(
        f"  {prof.upload_documents:,} abstracts by {uploads.CLIENTS} clients, empty store and with "
        f"{prof.preload_chunks:,} chunks stored; a {prof.pdf_pages}-page PDF",
        flush=True,
    )
    return uploads.measure(work, prof.upload_documents, prof.preload_chunks, prof.pdf_pages)


def redis_latency(fleet: Fleet, prof: Profile, work: Path) -> dict[str, Any]:
    out = work / "redis-latency.json"
    argv = [sys.executable, "-m", "bench.redis_cost", "latency", "--redis-url", fleet.redis.url]
    argv += ["--kb", fleet.kb_id, "--iterations", str(prof.redis_iterations), "--out", str(out)]
    run_step(argv, core=str(SERVER_CORE))
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def http_phases(prof: Profile, work: Path, results: dict[str, Any]) -> None:
    opts = prof.http
    fleet = Fleet(work / "fleet", kb_chunks=prof.kb_chunks, questions=prof.questions)
    try:
        step = time.monotonic()
        print("  starting servers", flush=True)
        fleet.start()
        fleet.prepare()
        results["setup"] = {**fleet.setup_info, "seconds": round(time.monotonic() - step, 1)}
        results["implementations"] = fleet.implementations()
        fleet.record_rss("ready")

        print(
            "  throughput: raw, litestar, cached chat (telemetry off, on, every trace), the guide's stack", flush=True
        )
        ceiling_variants = ["raw", "litestar", "cached_off", "cached_on", "cached_full", "guide"]
        throughput = throughput_rounds(
            fleet, ceiling_variants, opts, work, concurrency=opts.concurrency, run_s=opts.run_s
        )
        results["throughput"] = throughput.runs
        fleet.record_rss("throughput")

        rps = summarize(throughput, "requests_per_s")
        ceiling_rate = opts.fixed_rate_fraction * min(rps["raw"], rps["litestar"])
        cached_rate = opts.fixed_rate_fraction * min(rps["cached_off"], rps["cached_on"], rps["cached_full"])
        print(f"  fixed rate: ceilings at {ceiling_rate:,.0f}/s, cached chat at {cached_rate:,.0f}/s", flush=True)
        ceilings_fixed = fixed_rate_rounds(fleet, ["raw", "litestar"], ceiling_rate, opts, work, run_s=opts.run_s)
        cached_fixed = fixed_rate_rounds(
            fleet, ["cached_off", "cached_on", "cached_full"], cached_rate, opts, work, run_s=opts.run_s
        )
        results["fixed_rate"] = {
            "ceilings": {"rate": ceiling_rate, "runs": ceilings_fixed.runs},
            "cached": {"rate": cached_rate, "runs": cached_fixed.runs},
        }
        fleet.record_rss("fixed_rate")

        print("  uncached chat (telemetry off, on)", flush=True)
        uncached = throughput_rounds(
            fleet,
            ["uncached_off", "uncached_on"],
            opts,
            work,
            concurrency=opts.uncached_concurrency,
            run_s=opts.uncached_run_s,
        )
        results["uncached"] = uncached.runs
        fleet.record_rss("uncached")

        print("  Redis: commands and round trips per cached chat, latency against a ping loop", flush=True)
        results["redis"] = {
            "counts": count_per_request(fleet, "cached_on", prof.redis_requests, prof.redis_rate, work),
            "latency": redis_latency(fleet, prof, work),
        }
        fleet.record_rss("redis")

        print(f"  soak: cached chat, telemetry on, {opts.soak_s:.0f} s at {cached_rate:,.0f}/s", flush=True)
        results["soak"] = soak(fleet, "cached_on", cached_rate, opts.soak_s, work)
        fleet.record_rss("soak")

        print("  telemetry: waiting for the exporters to flush", flush=True)
        wait_for_exports(fleet)
        results["telemetry"] = {
            "servers": [telemetry_check(fleet, name) for name in ("cached_on", "cached_full", "uncached_on")],
            "sink": fleet.sink.stats(),
            "scrapes": {"count": fleet.scraper.scrapes, "failures": fleet.scraper.failures},
        }
        results["memory"] = {
            "rss_mib_by_phase": {
                name: {phase: round(value / 2**20, 1) for phase, value in server.rss_by_phase.items()}
                for name, server in fleet.servers.items()
            }
        }
        results["redis_version"] = fleet.redis.version()
    finally:
        fleet.stop()


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in (
        "ragwatch",
        "uvicorn",
        "uvloop",
        "httptools",
        "litestar",
        "msgspec",
        "lancedb",
        "pyarrow",
        "numpy",
        "redis",
        "opentelemetry-sdk",
        "matplotlib",
    ):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    found["wrk"] = wrk_version()
    return found


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def git_revision() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "service", "telemetry"], cwd=ROOT, capture_output=True, check=False
    )
    revision = done.stdout.strip() or "unknown"
    return revision + ("+changes" if dirty.stdout.strip() else "")


def write_outputs(meta: dict[str, Any], results: dict[str, Any], out: Path, *, readme: bool) -> None:
    """``latest.json``, ``latest.md`` and ``latest.png`` in ``out``; with ``readme``, the table into README.md."""
    figures, targets, details = assemble.build(results)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "latest.json", meta, figures, targets, details)
    table = markdown(meta, figures, targets, details)
    (out / "latest.md").write_text(table)
    chart(out / "latest.png", figures, targets, details)
    if readme:
        refresh_readme(HERE / "README.md", table)
    print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run of every phase (~40 s)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per comparison (default 3)")
    parser.add_argument("--soak-seconds", type=float, help="memory soak length (default 60; 300 for the full soak)")
    parser.add_argument("--retrieval-sizes", type=int, nargs="+", help="chunk counts (default 10000 100000)")
    parser.add_argument(
        "--out", type=Path, help="where latest.* go (default bench/results; --quick: bench/.build/quick)"
    )
    parser.add_argument("--keep-work", action="store_true", help="keep the scratch directory (logs, data)")
    parser.add_argument("--render", type=Path, metavar="JSON", help="only redo the tables and chart from a latest.json")
    args = parser.parse_args(argv)
    if args.render is not None:
        saved = json.loads(args.render.read_text())
        out = args.out or args.render.parent
        full = saved["meta"]["mode"] == "full" and out.resolve() == (HERE / "results").resolve()
        write_outputs(saved["meta"], saved["details"], out, readme=full)
        return 0
    check_prerequisites()
    os.sched_setaffinity(0, {LOAD_CORE})  # the orchestrator and its threads stay off the server core
    prof = profile(args.quick, args)
    if args.out is None:
        args.out = HERE / ".build" / "quick" if args.quick else HERE / "results"
    pacer_binary()
    work = Path(tempfile.mkdtemp(prefix="ragwatch-bench-"))
    started = time.monotonic()
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    print(f"bench: {'quick' if args.quick else 'full'} run, scratch in {work}", flush=True)

    def timed(name: str, phase: Callable[[], None]) -> None:
        step = time.monotonic()
        print(f"[{step - started:5.0f}s] {name}", flush=True)
        phase()
        timings[name] = round(time.monotonic() - step, 1)

    def retrieval() -> None:
        results["retrieval"] = retrieval_phase(prof, work)

    def ingestion() -> None:
        results["ingestion"] = ingestion_phase(prof, work)

    def uploading() -> None:
        results["uploads"] = uploads_phase(prof, work)

    try:
        timed("retrieval", retrieval)
        timed("ingestion", ingestion)
        timed("uploads", uploading)
        timed("http", lambda: http_phases(prof, work, results))
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    duration = time.monotonic() - started
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "duration_s": round(duration, 1),
        "phase_seconds": timings,
        "rounds": prof.http.rounds,
        "machine": {"cpu_model": cpu_model(), "cores": os.cpu_count(), "kernel": platform.release()},
        "placement": {
            "load_core": LOAD_CORE,
            "server_core": SERVER_CORE,
            "on_load_core": ["wrk / pacer", "redis-server", "OTLP sink", "orchestrator and /metrics scraper"],
            "on_server_core": ["the process under test (one loaded at a time)", "retrieval and ingestion steps"],
        },
        "versions": {**versions(), "redis-server": results.get("redis_version", "unknown")},
        "ragwatch_revision": git_revision(),
        "options": {
            "concurrency": prof.http.concurrency,
            "uncached_concurrency": prof.http.uncached_concurrency,
            "run_seconds": prof.http.run_s,
            "fixed_rate_fraction": prof.http.fixed_rate_fraction,
            "soak_seconds": prof.http.soak_s,
            "retrieval_sizes": prof.retrieval_sizes,
            "ann_index_min_rows": prof.ann_min_rows,
            "kb_chunks": prof.kb_chunks,
        },
        "commands": {"load": " ".join(pinned(LOAD_CORE, ["wrk", "-t1", f"-c{prof.http.concurrency}", "..."]))},
    }
    out = args.out
    write_outputs(meta, results, out, readme=out.resolve() == (HERE / "results").resolve() and not args.quick)
    print(f"bench: done in {duration:.0f} s; wrote {out}/latest.json, latest.md, latest.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
