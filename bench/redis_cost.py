"""What Redis costs a cached chat: commands and round trips counted by Redis itself, and the time they take.

Counting (in the orchestrator, :func:`count_per_request`): ``INFO all`` before and after a fixed number of
cached chats sent at a moderate fixed rate. ``commandstats`` gives calls per command; ``total_reads_processed``
gives the socket reads Redis served, which is one per round trip (a pipelined batch arrives in one read).
Commands issued from inside a Lua script are counted by ``commandstats`` too, so ``MONITOR`` runs alongside
and tells them apart (Redis tags them ``lua``). What the idle servers send meanwhile (readiness pings, the
active-tenants publisher) is measured over an idle window of the same length first and subtracted, and left
out of the ``MONITOR`` split by name. The server is warmed first at the same rate, so that opening pool
connections and health-checking idle ones (one-off costs) stay out of the per-request figures.

Latency (``python -m bench.redis_cost latency``, pinned to the server core): the service's own Redis client
(built by :func:`service.container.build_container`, same pool and timeouts) runs a bare ``PING`` loop,
then the exact calls a cached chat makes, through the service's own :class:`RateLimiter` and :class:`Cache`
(the answer-cache keys are read in the rate limiter's round trip, as the chat route does).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.fleet import CACHED_QUESTION, Fleet
from bench.load import run_pacer
from bench.stats import percentiles_ms

OWN_COMMANDS = {"info", "monitor"}
BACKGROUND = {"ping", "zadd", "zremrangebyscore", "zcard"}
"""Sent by idle servers on their own schedule (readiness probe, active-tenants publisher), never by a chat."""


class Snapshots:
    """``INFO all`` on one kept-open connection: each snapshot costs Redis exactly one read of its own."""

    def __init__(self, port: int) -> None:
        self._conn = socket.create_connection(("127.0.0.1", port), timeout=5)

    def take(self) -> tuple[Counter[str], int]:
        """Calls per command (``commandstats``) and ``total_reads_processed``."""
        self._conn.sendall(b"INFO all\r\n")
        data = b""
        while True:
            chunk = self._conn.recv(1 << 20)
            if not chunk:
                break
            data += chunk
            header, _, rest = data.partition(b"\r\n")
            if header.startswith(b"$") and len(rest) >= int(header[1:]) + 2:
                break
        text = data.decode(errors="replace")
        calls: Counter[str] = Counter()
        for name, value in re.findall(r"^cmdstat_([^:]+):calls=(\d+)", text, flags=re.MULTILINE):
            calls[name.lower()] = int(value)
        reads = re.search(r"^total_reads_processed:(\d+)", text, flags=re.MULTILINE)
        return calls, int(reads.group(1)) if reads else 0

    def close(self) -> None:
        self._conn.close()


class Monitor(threading.Thread):
    """``MONITOR`` on its own connection: counts commands by source (a client, or a Lua script)."""

    def __init__(self, port: int) -> None:
        super().__init__(name="redis-monitor", daemon=True)
        self.port = port
        self.by_source: Counter[str] = Counter()
        self.by_command: Counter[str] = Counter()
        self.active = False
        self._stop_event = threading.Event()
        self._ready = threading.Event()

    def run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
            conn.sendall(b"MONITOR\r\n")
            buffer = b""
            self._ready.set()
            while not self._stop_event.is_set():
                try:
                    chunk = conn.recv(1 << 16)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\r\n")
                for line in lines:
                    self._count(line.decode(errors="replace"))

    def _count(self, line: str) -> None:
        match = re.match(r'^\+[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"', line)
        if match is None or not self.active:
            return
        command = match.group(2).lower()
        if command in OWN_COMMANDS or command in BACKGROUND:
            return
        source = "lua" if match.group(1) == "lua" else "client"
        self.by_source[source] += 1
        self.by_command[f"{source}:{command}"] += 1

    def start_and_wait(self) -> None:
        self.start()
        self._ready.wait(5)
        time.sleep(0.2)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def count_per_request(fleet: Fleet, name: str, requests: int, rate: float, work: Path) -> dict[str, Any]:
    port = fleet.redis.port
    window_s = requests / rate
    server = fleet.servers[name]
    # Warm first: the server's Redis pool opens connections (each sends CLIENT SETINFO) and health-checks
    # long-idle ones with a PING; a long-running server under steady load does neither.
    warm = run_pacer(server.port, fleet.requests[name], work, rate=rate, count=min(requests, 400), connections=4)
    fleet.served[name] += warm["completed"]
    monitor = Monitor(port)
    monitor.start_and_wait()
    snapshots = Snapshots(port)
    calls0, reads0 = snapshots.take()
    time.sleep(window_s)
    calls1, reads1 = snapshots.take()
    monitor.active = True
    started = time.monotonic()
    run = run_pacer(server.port, fleet.requests[name], work, rate=rate, count=requests, connections=4)
    elapsed = time.monotonic() - started
    fleet.served[name] += run["completed"]
    monitor.active = False
    calls2, reads2 = snapshots.take()
    snapshots.close()
    monitor.stop()
    scale = elapsed / window_s
    served = run["completed"]
    per_request: dict[str, float] = {}
    for command in set(calls2) | set(calls1):
        if command in OWN_COMMANDS:
            continue
        idle = (calls1[command] - calls0[command]) * scale
        value = (calls2[command] - calls1[command] - idle) / served
        if abs(value) >= 0.005:
            per_request[command] = round(value, 3)
    # Each snapshot is one read of its own, counted in the delta that it closes.
    idle_reads = (reads1 - reads0 - 1) * scale
    round_trips = (reads2 - reads1 - 1 - idle_reads) / served
    sources = {source: round(count / served, 3) for source, count in monitor.by_source.items()}
    by_command = {key: round(count / served, 3) for key, count in sorted(monitor.by_command.items())}
    client_commands = sources.get("client", 0.0)
    return {
        "variant": name,
        "requests": served,
        "errors": run["errors"] + run["non_2xx"],
        "rate": rate,
        "commandstats_per_request": dict(sorted(per_request.items())),
        "commands_per_request_total": round(sum(per_request.values()), 3),
        "client_commands_per_request": client_commands,
        "script_commands_per_request": sources.get("lua", 0.0),
        "monitor_per_request": by_command,
        "round_trips_per_request": round(round_trips, 3),
        "background_reads_per_s": round((reads1 - reads0 - 1) / window_s, 2),
    }


# --- latency, in its own process on the server core ---------------------------------------------------------


async def _latency(redis_url: str, kb_id: str, iterations: int, scratch: str) -> dict[str, Any]:
    from bench.fleet import HUGE, JWT_SECRET, TENANT, USER  # noqa: PLC0415
    from service.auth import ADMIN, MEMBER, Principal  # noqa: PLC0415 - the subprocess imports the service
    from service.config import load_settings  # noqa: PLC0415
    from service.container import build_container  # noqa: PLC0415
    from service.errors import NotFound  # noqa: PLC0415
    from service.models import ChatRequest  # noqa: PLC0415
    from telemetry import disabled_telemetry  # noqa: PLC0415

    settings = load_settings(
        {
            "RAGWATCH_DATA_DIR": scratch,
            "RAGWATCH_REDIS_URL": redis_url,
            "RAGWATCH_JWT_SECRET": JWT_SECRET,
            "RAGWATCH_RATE_LIMIT_PER_MINUTE": HUGE,
            "RAGWATCH_RATE_LIMIT_PER_HOUR": HUGE,
            "RAGWATCH_RATE_LIMIT_TENANT_PER_MINUTE": HUGE,
            "RAGWATCH_RATE_LIMIT_TENANT_PER_HOUR": HUGE,
        }
    )
    # The service's own object graph (its composition root), with no HTTP server and telemetry off.
    container = build_container(settings, telemetry=disabled_telemetry())
    await container.start()
    shared, limiter, chat = container.shared, container.limiter, container.chat
    assert shared.redis is not None
    assert limiter is not None
    principal = Principal(tenant_id=TENANT, user_id=USER, roles=frozenset({ADMIN, MEMBER}))
    request = ChatRequest(kb_id=kb_id, question=CACHED_QUESTION)
    for _ in range(200):  # warm the pool's connections
        await shared.redis.ping()
    pings: list[float] = []
    for _ in range(iterations):
        started = time.perf_counter()
        await shared.redis.ping()
        pings.append(time.perf_counter() - started)
    sequences: list[float] = []
    outcomes: Counter[str] = Counter()
    for _ in range(iterations):
        # As the chat route does it: the rate-limit script and the answer cache's keys in one call, then the
        # answer served from what that call read.
        started = time.perf_counter()
        question = await chat.question(principal, request)
        keys = chat.read_keys(principal, question)
        decision = await limiter.check(principal.tenant_id, principal.user_id, "chat", keys)
        try:
            cached = (await chat.answer(principal, question, decision.read)).cached
        except NotFound:  # a miss: this process's own (empty) store does not hold the server's knowledge base
            cached = False
        sequences.append(time.perf_counter() - started)
        outcomes["hit" if cached else "miss"] += 1
    await container.aclose()
    ping = percentiles_ms(pings)
    timing = percentiles_ms(sequences)
    return {
        "iterations": iterations,
        "ping_ms": ping,
        "cached_chat_redis_ms": timing,
        "answer_cache_outcomes": dict(outcomes),
        "ratio_p50_to_ping": round(timing["p50"] / ping["p50"], 2) if ping["p50"] else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Redis latency of a cached chat, with the service's client")
    parser.add_argument("step", choices=["latency"])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--kb", required=True)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    scratch = str(args.out.parent / "redis-cost-data")
    try:
        import uvloop  # noqa: PLC0415 - the loop the service runs on, when installed

        outcome = uvloop.run(_latency(args.redis_url, args.kb, args.iterations, scratch))
        outcome["loop"] = "uvloop"
    except ImportError:
        outcome = asyncio.run(_latency(args.redis_url, args.kb, args.iterations, scratch))
        outcome["loop"] = "asyncio"
    args.out.write_text(json.dumps(outcome, indent=2))


if __name__ == "__main__":
    main()
