"""``python -m bench.soak``: mixed chat, search and ingestion against one ``ragwatch serve`` for ten minutes, at
70 % of the capacity measured at the start of the same run, with redis-server restarted once in the middle.

Set-up: a private redis-server, the OTLP sink (telemetry on, default sampling, ``/metrics`` scraped every
second) and one ``ragwatch serve`` pinned to the server core; a *handbook* knowledge base that chat and search
read, and an *inbox* of 32 documents that ingestion keeps replacing (the knowledge bases keep their size, so RSS
is not confounded with data growth), which chat and search also read (each write makes its cached answers stale).

The mix is one cycle of 40 requests that the pacer (``bench/pacer.c``) sends in a fixed shuffled order: half
chats (14 on the handbook, 4 of them in conversations; 6 on the inbox), 30 % searches, 10 % ingestions (four
inbox documents replaced, with a new text each pacer run), 10 % conversation reads. *Capacity*: a closed-loop
burst of that mix on 16 connections (below the service's admission limit of 32, so nothing is shed). Then a
warm-up at 70 % of it, and the soak itself at that rate: one open-loop pacer run per minute (latency counted
from each request's due time, 16 connections), each started on the minute while the previous one still waits
for its last answers, so the load never pauses; the service's RSS, open file descriptors, threads and Redis
connections every 10 s, and its own ``/metrics`` (requests by route and status, seconds by route) at every
minute, when Redis stops, once it is back, and at the end. Whether every request was answered is read from the
service's own count against the requests the pacer sent: the pacer loses track of a few answers (when the server
closes an idle keep-alive connection, ``bench/pacer.c`` reconnects it and puts it on its idle stack a second time;
it may then send a second request on it before the first is answered, count the first answer for the second
request, and report the first as unanswered).

Half-way, redis-server is stopped (SIGTERM; no persistence, so every key is gone) and started again on the same
port ``--outage-seconds`` later. README's "When Redis fails" says what to expect: every request is still
answered (caches bypassed, the limiter open), except reading a conversation, a 503 ``shared-state-unavailable``
(and, Redis having lost it, a 404 for a conversation read before its next turn). Those are counted apart, in the
window from the stop until three cycles of the mix (at least 2 s) after the service reports Redis up again
(``rag_dependency_up``); any other 5xx, anywhere, is unexpected. RSS growth compares the median of the last
minute's samples with the first minute's, right after the warm-up (not the process's start, nor one sample: a
maintenance run of LanceDB lifts RSS by a hundred MiB or more for a few seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from bench import figures as assemble
from bench.corpus import Corpus
from bench.fleet import HUGE, JWT_SECRET, TELEMETRY_ON, Scraper
from bench.load import HttpRequest, pacer_binary
from bench.procs import (
    LOAD_CORE,
    SERVER_CORE,
    Disturbance,
    OtlpSink,
    RedisServer,
    Server,
    pinned,
    ragwatch_server,
    rss_bytes,
)
from bench.report import Target, markdown, refresh_readme
from bench.run import cpu_model, git_revision, versions
from bench.stats import median
from bench.uploads import settle
from service.auth import ADMIN, MEMBER, mint_token

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TENANT, USER = "soak", "alice"
HANDBOOK_PARAGRAPHS, INBOX_DOCUMENTS, INBOX_PARAGRAPHS = 2_000, 32, 4
CONVERSATIONS = 4
BURST_CONNECTIONS = SOAK_CONNECTIONS = 16
"""Two runs overlap at most (one's tail, the next one's start): 32 connections, ``RAGWATCH_MAX_CONCURRENT_REQUESTS``,
so the service never has more requests in flight than it admits, and never sheds one."""
OUTAGE_GRACE_S = 2.0
SLOW_BUCKET = "5.12"
"""The service's request-duration bucket bound (seconds) past which a request counts as slow in the results."""
PACER_TIMEOUT_S = 30
"""How long the pacer waits for the last answers of a run; a request still unanswered then counts as failed."""
CONVERSATION_ROUTE = "GET /v1/conversations/{conversation_id}"
EXPECTED_IN_OUTAGE = {CONVERSATION_ROUTE: {"503", "404"}}
"""README, "When Redis fails": reading a conversation is a 503 ``shared-state-unavailable`` while Redis is down,
and the restarted Redis no longer holds it (a 404) until the conversation's next turn. So is a request with an
``Idempotency-Key``, and with ``RAGWATCH_RATE_LIMIT_FAILURE_MODE=closed`` every limited one: the soak sends
neither. Everything else is answered."""
Entries = list[tuple[str, HttpRequest]]
Pacer = subprocess.Popen[str]
_RUNS = itertools.count()


# --- the mix ------------------------------------------------------------------------------------------------


@dataclass
class Mix:
    """The request cycle the pacer rotates over; the ingested texts change with ``generation``."""

    token: str
    handbook: str
    inbox: str
    handbook_questions: list[str]
    inbox_questions: list[str]
    corpus: Corpus

    def cycle(self, generation: int) -> Entries:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}

        def post(path: str, body: dict[str, Any]) -> HttpRequest:
            return HttpRequest("POST", path, headers, (json.dumps(body),))

        entries: Entries = []
        for n, question in enumerate(self.handbook_questions[:14]):
            chat: dict[str, Any] = {"kb_id": self.handbook, "question": question}
            if n < CONVERSATIONS:
                chat["conversation_id"] = f"conversation-{n}"
            entries.append(("chat", post("/v1/chat", chat)))
        entries += [("chat", post("/v1/chat", {"kb_id": self.inbox, "question": q})) for q in self.inbox_questions[:6]]
        searched = [(self.handbook, q) for q in self.handbook_questions[14:22]]
        searched += [(self.inbox, q) for q in self.inbox_questions[6:10]]
        for kb, question in searched:
            entries.append(("search", post(f"/v1/knowledge-bases/{kb}/search", {"query": question, "top_k": 5})))
        for n in range(4):
            number = (generation * 4 + n) % INBOX_DOCUMENTS
            text = "\n\n".join(self.corpus.paragraphs(INBOX_PARAGRAPHS))
            document = {"id": f"inbox-{number}", "title": f"Inbox {number}", "text": text}
            entries.append(("ingest", post(f"/v1/knowledge-bases/{self.inbox}/documents", document)))
        auth = {"Authorization": f"Bearer {self.token}"}
        for n in range(CONVERSATIONS):
            entries.append(("conversation", HttpRequest("GET", f"/v1/conversations/conversation-{n}", auth)))
        random.Random(3).shuffle(entries)  # the same interleaving every cycle and every run
        return entries


def launch(port: int, entries: Entries, work: Path, *, rate: float, connections: int, **length: float) -> Pacer:
    """Start one pacer run over the mixed cycle (:func:`bench.load.run_pacer` sends one route; this many), for
    ``duration_s`` seconds or ``count`` requests, with request files of its own (runs may overlap)."""
    files = work / "pacer" / str(next(_RUNS))
    files.mkdir(parents=True)
    argv = [str(pacer_binary()), "-p", str(port), "-r", f"{rate:.3f}", "-c", str(connections)]
    argv += ["-t", str(PACER_TIMEOUT_S)]
    for index, (_, request) in enumerate(entries):
        path = files / f"{index}.http"
        path.write_bytes(request.raw(port, request.bodies[0] if request.bodies else None))
        argv += ["-f", str(path)]
    argv += ["-n", str(int(length["count"]))] if "count" in length else ["-d", f"{length['duration_s']:.3f}"]
    return subprocess.Popen(pinned(LOAD_CORE, argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def outcome(process: Pacer) -> dict[str, Any]:
    """The pacer's JSON, once it has received its last answers (or given up on them)."""
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"pacer failed ({process.returncode}): {stderr.strip()}")
    result: dict[str, Any] = json.loads(stdout)
    return result


# --- what the service and Redis say ----------------------------------------------------------------------------


@dataclass
class Counts:
    """The service's own ``/metrics``: requests by ``(route, status)``, and the seconds they took by route."""

    statuses: Counter[tuple[str, str]] = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=dict)
    slow: Counter[str] = field(default_factory=Counter)
    """Requests by route that took the service more than :data:`SLOW_BUCKET` seconds (its duration histogram)."""
    shed: float = 0.0
    redis_up: bool = False

    def since(self, before: Counts) -> Counter[tuple[str, str]]:
        return Counter({key: n - before.statuses[key] for key, n in self.statuses.items() if n > before.statuses[key]})

    def slow_since(self, before: Counts) -> dict[str, int]:
        return {route: n - before.slow[route] for route, n in sorted(self.slow.items()) if n > before.slow[route]}

    def mean_ms(self, before: Counts) -> dict[str, float]:
        answered: Counter[str] = Counter()
        for (route, _), n in self.since(before).items():
            answered[route] += n
        return {
            route: round((self.seconds.get(route, 0.0) - before.seconds.get(route, 0.0)) / n * 1000, 1)
            for route, n in sorted(answered.items())
        }


def read_counts(server: Server) -> Counts:
    counts = Counts()
    text = httpx.get(server.url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels, value = sample.labels, float(sample.value)
            route = f"{labels.get('method')} {labels.get('endpoint')}"
            if labels.get("endpoint", "").startswith("/health"):
                continue
            if sample.name == "rag_requests_total":
                counts.statuses[(route, labels.get("status", "?"))] += int(value)
            elif sample.name == "rag_request_duration_seconds_sum":
                counts.seconds[route] = counts.seconds.get(route, 0.0) + value
            elif sample.name == "rag_request_duration_seconds_count":
                counts.slow[route] += int(value)
            elif sample.name == "rag_request_duration_seconds_bucket" and labels.get("le") == SLOW_BUCKET:
                counts.slow[route] -= int(value)
            elif sample.name == "rag_requests_shed_total":
                counts.shed += value
            elif sample.name == "rag_dependency_up" and labels.get("dependency") == "redis":
                counts.redis_up = value == 1
    return counts


def redis_clients(redis: RedisServer) -> int | None:
    """``connected_clients`` less the connection asking (None while Redis is down)."""
    try:
        info = redis.command("INFO", "clients").decode()
    except OSError:
        return None
    found = [line for line in info.splitlines() if line.startswith("connected_clients:")]
    return int(found[0].split(":", 1)[1]) - 1 if found else None


def proc_status(pid: int) -> dict[str, int]:
    """Open file descriptors and threads of ``pid`` (0 once it is gone)."""
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {"open_fds": 0, "threads": 0}
    threads = next((int(line.split()[1]) for line in lines if line.startswith("Threads:")), 0)
    return {"open_fds": fds, "threads": threads}


class Sampler(threading.Thread):
    """Every ``interval_s``: the service's RSS, open fds and threads, the client connections Redis has, and the
    data files of LanceDB's chunks table (which compaction should keep from piling up)."""

    def __init__(self, server: Server, redis: RedisServer, interval_s: float, store: Path) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.server, self.redis, self.interval_s, self.store = server, redis, interval_s, store
        self.samples: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self._stop_event = threading.Event()

    def take(self) -> None:
        at = round(time.monotonic() - self.started, 1)
        rss = round(rss_bytes(self.server.pid) / 2**20, 2)
        status = proc_status(self.server.pid)
        files = len(os.listdir(self.store)) if self.store.is_dir() else 0
        self.samples.append(
            {"t_s": at, "rss_mib": rss, **status, "redis_clients": redis_clients(self.redis), "store_data_files": files}
        )

    def run(self) -> None:
        self.take()
        while not self._stop_event.wait(self.interval_s):
            self.take()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)
        self.take()


class RedisRestart(threading.Thread):
    """At ``at_s``: stop redis-server, start it again on its port ``outage_s`` later, and time how long the service
    takes to report it up; the service's counts are read at the stop and at the end of the outage window."""

    def __init__(self, server: Server, redis: RedisServer, at_s: float, outage_s: float, grace_s: float) -> None:
        super().__init__(name="redis-restart", daemon=True)
        self.server, self.redis, self.at_s, self.outage_s, self.grace_s = server, redis, at_s, outage_s, grace_s
        self.started = time.monotonic()
        self.record: dict[str, Any] = {"error": None}
        self.before, self.after = Counts(), Counts()

    def run(self) -> None:
        try:
            self._restart()
        except Exception as exc:  # reported in the results rather than lost with the thread
            self.record["error"] = f"{type(exc).__name__}: {exc}"

    def _restart(self) -> None:
        time.sleep(max(0.0, self.at_s - (time.monotonic() - self.started)))
        clients_before = redis_clients(self.redis)
        self.before = read_counts(self.server)
        stopped = time.monotonic()
        self.redis.stop()
        time.sleep(self.outage_s)
        self.redis.start()
        restarted = time.monotonic()
        up: float | None = None
        ready: float | None = None
        while time.monotonic() - restarted < 60 and (up is None or ready is None):
            if up is None and read_counts(self.server).redis_up:
                up = time.monotonic() - restarted
            with contextlib.suppress(httpx.HTTPError):
                checks = httpx.get(self.server.url + "/health/ready", timeout=5).json().get("checks", {})
                if ready is None and checks.get("redis", {}).get("status") == "ok":
                    ready = time.monotonic() - restarted
            time.sleep(0.1)
        window_end = restarted + (up if up is not None else 60.0) + self.grace_s
        time.sleep(max(0.0, window_end - time.monotonic()))
        self.after = read_counts(self.server)
        self.record.update(
            stopped_at_s=round(stopped - self.started, 1),
            outage_s=round(restarted - stopped, 2),
            service_reports_redis_up_after_s=None if up is None else round(up, 2),
            ready_reports_redis_ok_after_s=None if ready is None else round(ready, 2),
            window_s=round(window_end - stopped, 2),
            redis_clients_before=clients_before,
            redis_clients_after_window=redis_clients(self.redis),
        )


# --- set-up -------------------------------------------------------------------------------------------------


def start_service(work: Path, redis: RedisServer, sink: OtlpSink) -> Server:
    env = {
        "RAGWATCH_DATA_DIR": str(work / "data"),
        "RAGWATCH_JWT_SECRET": JWT_SECRET,
        "RAGWATCH_REDIS_URL": redis.url,
        **dict.fromkeys(("RAGWATCH_RATE_LIMIT_PER_MINUTE", "RAGWATCH_RATE_LIMIT_PER_HOUR"), HUGE),
        **dict.fromkeys(("RAGWATCH_RATE_LIMIT_TENANT_PER_MINUTE", "RAGWATCH_RATE_LIMIT_TENANT_PER_HOUR"), HUGE),
        "RAGWATCH_LOG_LEVEL": "INFO",
        "RAGWATCH_LOG_FORMAT": "json",
        **TELEMETRY_ON,
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url,
    }
    server = ragwatch_server("soak", work, env).start()
    server.wait_ready()
    return server


def prepare(server: Server, token: str) -> Mix:
    """The two knowledge bases, and the questions the mix asks (each about one of their paragraphs)."""
    corpus = Corpus(seed=13)
    handbook_paragraphs = corpus.paragraphs(HANDBOOK_PARAGRAPHS)
    inbox_paragraphs: list[str] = []
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=300) as client:
        kbs = [
            client.post("/v1/knowledge-bases", json={"name": name}).raise_for_status().json()["id"]
            for name in ("handbook", "inbox")
        ]
        for start in range(0, HANDBOOK_PARAGRAPHS, 500):
            text = "\n\n".join(handbook_paragraphs[start : start + 500])
            document = {"title": f"Handbook {start // 500}", "text": text}
            client.post(f"/v1/knowledge-bases/{kbs[0]}/documents", json=document).raise_for_status()
        for n in range(INBOX_DOCUMENTS):
            paragraphs = corpus.paragraphs(INBOX_PARAGRAPHS)
            inbox_paragraphs += paragraphs
            document = {"id": f"inbox-{n}", "title": f"Inbox {n}", "text": "\n\n".join(paragraphs)}
            client.post(f"/v1/knowledge-bases/{kbs[1]}/documents", json=document).raise_for_status()
    step = len(handbook_paragraphs) // 22
    handbook_questions = [corpus.question_about(handbook_paragraphs[i * step]) for i in range(22)]
    inbox_questions = [corpus.question_about(inbox_paragraphs[i * 7]) for i in range(10)]
    return Mix(token, kbs[0], kbs[1], handbook_questions, inbox_questions, corpus)


# --- the run --------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    minutes: float
    load_share: float
    outage_s: float
    capacity_s: float
    warmup_s: float
    sample_s: float

    @property
    def seconds(self) -> float:
        return self.minutes * 60

    @property
    def slice_s(self) -> float:
        """One pacer run per minute; a soak shorter than four minutes is cut in quarters instead."""
        return 60.0 if self.seconds >= 240 else self.seconds / 4


def run_record(run: dict[str, Any], **extra: Any) -> dict[str, Any]:
    keys = ("requests", "completed", "errors", "unanswered", "non_2xx", "status_4xx", "status_5xx", "late_sends")
    latency = {key: round(float(value) / 1000, 3) for key, value in run["latency_us"].items()}
    return {
        **extra,
        "achieved_rate": round(run["achieved_rate"], 1),
        **{k: run[k] for k in keys},
        "latency_ms": latency,
    }


def by_route(counts: Counter[tuple[str, str]]) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for (route, status), count in sorted(counts.items()):
        table.setdefault(route, {})[status] = count
    return table


def classify(outside: Counter[tuple[str, str]], outage: Counter[tuple[str, str]]) -> dict[str, Any]:
    """Statuses outside and inside the outage window; the ones README documents for an outage counted apart."""
    expected = Counter({key: n for key, n in outage.items() if key[1] in EXPECTED_IN_OUTAGE.get(key[0], ())})
    rest = outside + outage - expected
    by_status: Counter[str] = Counter()
    for (_, status), n in (outside + outage).items():
        by_status[status] += n
    return {
        "by_status": dict(sorted(by_status.items())),
        "status_500": by_status.get("500", 0),
        "expected_in_outage": by_route(expected),
        "unexpected_5xx": sum(n for (_, status), n in rest.items() if int(status) >= 500),
        "unexpected_4xx": sum(n for (_, status), n in rest.items() if 400 <= int(status) < 500),
        "outside_outage": by_route(outside),
        "outage_window": by_route(outage),
    }


def summarize(samples: list[dict[str, Any]], slices: list[dict[str, Any]], errors: dict[str, Any]) -> dict[str, Any]:
    start, end = samples[0], samples[-1]
    head = [s for s in samples if s["t_s"] <= samples[0]["t_s"] + 60]
    tail = [s for s in samples if s["t_s"] >= samples[-1]["t_s"] - 60]

    def medians(key: str) -> tuple[float, float]:
        return median([s[key] for s in head]), median([s[key] for s in tail])

    rss_head, rss_tail = medians("rss_mib")
    slope = np.polyfit([s["t_s"] / 60 for s in samples], [s["rss_mib"] for s in samples], 1)[0]
    compared = max(1, len(slices) // 5)
    p99_first = sum(s["latency_ms"]["p99"] for s in slices[:compared]) / compared
    p99_last = sum(s["latency_ms"]["p99"] for s in slices[-compared:]) / compared
    return {
        "rss_first_minute_median_mib": rss_head,
        "rss_last_minute_median_mib": rss_tail,
        "rss_growth_pct": round((rss_tail - rss_head) / rss_head * 100, 3),
        "rss_start_mib": start["rss_mib"],
        "rss_end_mib": end["rss_mib"],
        "rss_growth_start_to_end_pct": round((end["rss_mib"] - start["rss_mib"]) / start["rss_mib"] * 100, 3),
        "rss_trend_mib_per_minute": round(float(slope), 3),
        "rss_max_mib": max(s["rss_mib"] for s in samples),
        **{f"{key}_start": start[key] for key in ("open_fds", "threads", "redis_clients", "store_data_files")},
        **{f"{key}_end": end[key] for key in ("open_fds", "threads", "redis_clients", "store_data_files")},
        "open_fds_first_minute_median": medians("open_fds")[0],
        "open_fds_last_minute_median": medians("open_fds")[1],
        "open_fds_max": max(s["open_fds"] for s in samples),
        "p99_minutes_compared": compared,
        "p99_first_ms": round(p99_first, 3),
        "p99_last_ms": round(p99_last, 3),
        "p99_drift": round(p99_last / p99_first, 3) if p99_first else float("nan"),
        "status_500": errors["status_500"],
        "unexpected_5xx": errors["unexpected_5xx"],
    }


def targets(summary: dict[str, Any], restart: dict[str, Any]) -> list[Target]:
    up = restart.get("service_reports_redis_up_after_s")
    return [
        Target("soak_rss_growth", "RSS growth under 2 % (last minute's median against the first's, after warm-up)",
               summary["rss_growth_pct"], "<=", 2.0, "%"),
        Target("soak_no_500", "Zero 500s", summary["status_500"], "==", 0, "responses"),
        Target("soak_no_unexpected_5xx", "No 5xx but the Redis outage's documented 503s",
               summary["unexpected_5xx"], "==", 0, "responses"),
        Target("soak_every_request_answered", "Every request sent answered (by the service's own count)",
               summary["unanswered"], "==", 0, "requests"),
        Target("soak_redis_recovered", "The service uses Redis again within 5 s of its restart, by itself",
               float("nan") if up is None else up, "<=", 5.0, "s"),
    ]  # fmt: skip


def measure(plan: Plan, server: Server, redis: RedisServer, mix: Mix, work: Path) -> dict[str, Any]:
    """Capacity, warm-up, then the soak: one pacer run per slice, the sampler and the Redis restart alongside."""
    generations = itertools.count(1)

    def run(rate: float, connections: int, **length: float) -> Pacer:
        return launch(server.port, mix.cycle(next(generations)), work, rate=rate, connections=connections, **length)

    print("  capacity: a closed-loop burst of the mix", flush=True)
    probe = outcome(run(1e6, BURST_CONNECTIONS, count=300))
    watch = Disturbance(server.pid)
    burst = outcome(run(1e6, BURST_CONNECTIONS, count=max(400, int(probe["achieved_rate"] * plan.capacity_s))))
    disturbance = watch.finish()
    capacity = float(burst["achieved_rate"])
    rate = plan.load_share * capacity
    print(f"  capacity {capacity:,.0f}/s; warm-up {plan.warmup_s:.0f} s at {rate:,.0f}/s", flush=True)
    warmup = outcome(run(rate, SOAK_CONNECTIONS, duration_s=plan.warmup_s))
    print(f"  soak: {plan.minutes:g} min at {rate:,.0f}/s, Redis restarted half-way", flush=True)
    sampler = Sampler(server, redis, plan.sample_s, work / "data" / "lancedb" / "chunks.lance" / "data")
    # The window closes once every conversation had a turn since Redis came back: three cycles of the mix.
    grace_s = max(OUTAGE_GRACE_S, 3 * len(mix.cycle(0)) / rate)
    restart = RedisRestart(server, redis, plan.seconds / 2, plan.outage_s, grace_s)
    first = read_counts(server)
    sampler.start()
    restart.start()
    slices = run_slices(
        plan, server, first, sampler.started, lambda seconds: run(rate, SOAK_CONNECTIONS, duration_s=seconds)
    )
    sampler.stop()
    restart.join(timeout=120)
    last = read_counts(server)
    outage = restart.after.since(restart.before)
    errors = classify(last.since(first) - outage, outage)
    summary = summarize(sampler.samples, slices, errors)
    sent, answered = sum(s["requests"] for s in slices), sum(last.since(first).values())
    summary |= {
        "requests": sent,
        "answered_by_service": answered,
        "unanswered": max(0, sent - answered),
        "pacer_lost_track": sum(s["errors"] + s["unanswered"] for s in slices),
        "shed": last.shed - first.shed,
    }
    return {
        "plan": {**asdict(plan), "slice_s": plan.slice_s},
        "mix": {"requests_per_cycle": len(mix.cycle(0)), "shares": shares(mix.cycle(0))},
        "connections": {"burst": BURST_CONNECTIONS, "soak": SOAK_CONNECTIONS},
        "capacity": {
            "requests_per_s": round(capacity, 1),
            "burst": run_record(burst, **disturbance),
            "probe": run_record(probe),
        },
        "rate": round(rate, 1),
        "warmup": run_record(warmup, seconds=plan.warmup_s),
        "summary": summary,
        "targets": [t.as_dict() for t in targets(summary, restart.record)],
        "errors": errors,
        "redis_restart": restart.record,
        "slices": slices,
        "samples": sampler.samples,
    }


def run_slices(
    plan: Plan, server: Server, counts: Counts, started: float, start: Callable[[float], Pacer]
) -> list[dict[str, Any]]:
    """One pacer run per slice, each started on time (while the previous one still waits for its last answers, so
    the load never pauses); per slice, the service's own counts and the disturbance of its core."""
    runs: list[tuple[Pacer, dict[str, Any]]] = []
    boundaries = [min(n * plan.slice_s, plan.seconds) for n in range(math.ceil(plan.seconds / plan.slice_s - 1e-9) + 1)]
    for index, (begin, end) in enumerate(itertools.pairwise(boundaries)):
        time.sleep(max(0.0, started + begin - time.monotonic()))
        watch, process = Disturbance(server.pid), start(end - begin)
        time.sleep(max(0.0, started + end - time.monotonic()))
        previous, counts = counts, read_counts(server)
        extra = {"server_mean_ms": counts.mean_ms(previous), "server_slow": counts.slow_since(previous)}
        runs.append(
            (
                process,
                {"slice": index, "started_at_s": round(begin, 1), "seconds": end - begin, **extra, **watch.finish()},
            )
        )
        print(
            f"    [{begin:4.0f} s] started; the service answered {sum(counts.since(previous).values()):,} requests, "
            f"others took {runs[-1][1]['others_on_server_core_share']:.0%} of its core",
            flush=True,
        )
    slices = [run_record(outcome(process), **extra) for process, extra in runs]
    for s in slices:
        print(
            f"    [{s['started_at_s']:4.0f} s] {s['achieved_rate']:,.0f}/s, p50 {s['latency_ms']['p50']:,.1f} ms, p99 "
            f"{s['latency_ms']['p99']:,.1f} ms, non-2xx {s['non_2xx']}",
            flush=True,
        )
    return slices


def shares(entries: Entries) -> dict[str, float]:
    counts = Counter(kind for kind, _ in entries)
    return {kind: round(n / len(entries), 3) for kind, n in sorted(counts.items())}


def service_log(server: Server) -> dict[str, Any]:
    """What the service logged at WARNING and above, by level, logger and message (its first 60 characters):
    the outage should show as one error and a warning per conversation turn it could not read or keep."""
    found: Counter[str] = Counter()
    for line in server.log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("severity") in ("WARNING", "ERROR", "CRITICAL"):
                found[f"{record['severity']} {record.get('logger')}: {str(record.get('message'))[:60]}"] += 1
    return dict(found.most_common(20))


def soak(plan: Plan, work: Path) -> dict[str, Any]:
    redis, sink, scraper = RedisServer(work / "redis").start(), OtlpSink(work).start(), Scraper()
    server: Server | None = None
    try:
        server = start_service(work, redis, sink)
        rss_ready = rss_bytes(server.pid)
        mix = prepare(server, mint_token(JWT_SECRET, TENANT, USER, [ADMIN, MEMBER], 6 * 3600))
        setup = {"rss_at_ready_mib": round(rss_ready / 2**20, 1), "settled_after_s": settle(server)}
        scraper.target = server
        scraper.start()
        results = measure(plan, server, redis, mix, work)
        results["setup"] = setup | {"handbook_paragraphs": HANDBOOK_PARAGRAPHS, "inbox_documents": INBOX_DOCUMENTS}
        results["telemetry"] = {"sink": sink.stats(), "scrapes": scraper.scrapes, "failures": scraper.failures}
        results["service_log"] = service_log(server)
        results["redis_version"] = redis.version()
        return results
    finally:
        scraper.stop()
        if server is not None:
            server.stop()
        sink.stop()
        redis.stop()


def rerender_report() -> None:
    """Redo ``latest.md`` and bench/README.md's results (which show the soak) from ``latest.json``."""
    latest = RESULTS / "latest.json"
    if not latest.exists():
        return
    saved = json.loads(latest.read_text())
    if saved["meta"].get("mode") != "full":
        return
    figures, found, details = assemble.build(saved["details"])
    table = markdown(saved["meta"], figures, found, details)
    (RESULTS / "latest.md").write_text(table)
    refresh_readme(HERE / "README.md", table)


def _nan_as_null(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_as_null(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nan_as_null(item) for item in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak (default 10)")
    parser.add_argument("--load", type=float, default=0.7, help="share of the measured capacity (default 0.7)")
    parser.add_argument("--outage-seconds", type=float, default=10.0, help="how long Redis stays down (default 10)")
    parser.add_argument("--capacity-seconds", type=float, default=15.0, help="the closed-loop burst (default 15)")
    parser.add_argument("--warmup-seconds", type=float, help="at the soak's rate (default 60, or half the soak)")
    parser.add_argument("--sample-seconds", type=float, default=10.0, help="sampling interval (default 10)")
    parser.add_argument("--out", type=Path, help="default bench/results/soak.json (shorter soaks: bench/.build/)")
    parser.add_argument("--keep-work", action="store_true", help="keep the scratch directory (logs, data)")
    args = parser.parse_args(argv)
    missing = [tool for tool in ("redis-server", "taskset") if shutil.which(tool) is None]
    if missing or (os.cpu_count() or 1) < 2:
        sys.exit(f"soak: needs two cores, redis-server and taskset (missing: {', '.join(missing) or 'none'})")
    out: Path = args.out or (RESULTS / "soak.json" if args.minutes >= 10 else HERE / ".build" / "soak.json")
    warmup_s = args.warmup_seconds if args.warmup_seconds is not None else min(60.0, args.minutes * 30)
    plan = Plan(args.minutes, args.load, args.outage_seconds, args.capacity_seconds, warmup_s, args.sample_seconds)
    os.sched_setaffinity(0, {LOAD_CORE})  # the orchestrator and its threads stay off the server core
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    pacer_binary()
    work = Path(tempfile.mkdtemp(prefix="ragwatch-soak-"))
    print(f"soak: {plan.minutes:g} min, scratch in {work}", flush=True)
    started = time.monotonic()
    try:
        results = soak(plan, work)
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 1),
        "machine": {"cpu_model": cpu_model(), "cores": os.cpu_count()},
        "placement": {"load_core": LOAD_CORE, "server_core": SERVER_CORE},
        "versions": {**versions(), "redis-server": results.pop("redis_version")},
        "ragwatch_revision": git_revision(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_nan_as_null({"meta": meta, **results}), indent=2, allow_nan=False) + "\n")
    if out.resolve() == (RESULTS / "soak.json").resolve():
        rerender_report()
    s = results["summary"]
    print(
        f"soak: RSS {s['rss_first_minute_median_mib']:.1f} -> {s['rss_last_minute_median_mib']:.1f} MiB "
        f"({s['rss_growth_pct']:+.2f} %), "
        f"500s {s['status_500']}, unexpected 5xx {s['unexpected_5xx']}, p99 {s['p99_first_ms']:,.1f} -> "
        f"{s['p99_last_ms']:,.1f} ms, fds {s['open_fds_start']} -> {s['open_fds_end']}, Redis connections "
        f"{s['redis_clients_start']} -> {s['redis_clients_end']}; wrote {out}"
    )
    return 0 if all(t["met"] for t in results["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
