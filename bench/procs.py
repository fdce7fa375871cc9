"""Processes the benchmark starts: servers under test, redis-server and the OTLP sink, each pinned to a core.

Placement on the 2-core machine: core 1 runs only the process under test (one at a time is loaded; the
others sit idle on the same core); core 0 runs the load generator and everything that stands for another
machine in production (redis-server, the OTLP collector stand-in, the orchestrator and its /metrics scraper).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

LOAD_CORE = 0
SERVER_CORE = 1
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(core: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *argv]


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` from /proc (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time ``pid`` has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def core_times(core: int) -> tuple[float, float]:
    """Seconds core ``core`` has spent busy (any process, interrupts included) and stolen by the hypervisor."""
    ticks = os.sysconf("SC_CLK_TCK")
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            values = [int(v) for v in line.split()[1:]]
            user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
            return (user + nice + system + irq + softirq) / ticks, steal / ticks
    return 0.0, 0.0


class Disturbance:
    """How much of the server core went to anything but the server during a run, and how much the hypervisor
    stole: a run with a large share of either was measured on a disturbed machine."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.started = time.monotonic()
        self.busy, self.steal = core_times(SERVER_CORE)
        self.own = cpu_seconds(pid)

    def finish(self) -> dict[str, float]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        busy, steal = core_times(SERVER_CORE)
        own = cpu_seconds(self.pid) - self.own
        others = max(busy - self.busy - own, 0.0)
        return {
            "server_cpu_s": round(own, 3),
            "others_on_server_core_share": round(others / elapsed, 3),
            "steal_share": round((steal - self.steal) / elapsed, 3),
        }


def event_loop_and_parser(pid: int) -> dict[str, str]:
    """Which event loop and HTTP parser a uvicorn process runs, from the shared objects it has mapped.

    uvicorn's ``auto`` settings import uvloop and httptools only when it uses them, so a mapped
    ``uvloop/loop*.so`` means the uvloop loop and a mapped ``httptools/parser`` the httptools parser.
    """
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return {"loop": "unknown", "http": "unknown"}
    return {
        "loop": "uvloop" if "/uvloop/loop" in maps else "asyncio",
        "http": "httptools" if "/httptools/parser" in maps else "h11",
    }


@dataclass
class Server:
    """One server under test, its own warm process pinned to the server core."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    ready_path: str = "/health/live"
    process: subprocess.Popen[bytes] | None = None
    rss_by_phase: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Server:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                pinned(SERVER_CORE, self.argv),
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {self.tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not become ready: {self.tail()}")

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def record_rss(self, phase: str) -> int:
        value = rss_bytes(self.pid)
        self.rss_by_phase[phase] = value
        return value

    def implementation(self) -> dict[str, str]:
        return event_loop_and_parser(self.pid)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def uvicorn_server(name: str, app: str, work: Path, env: dict[str, str] | None = None, ready_path: str = "/") -> Server:
    """``uvicorn <module>:<app>`` with uvloop and httptools when they are installed."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--no-access-log", "--log-level", "warning", "--loop", "auto", "--http", "auto"]
    return Server(name, argv, {**os.environ, **(env or {})}, port, work / f"{name}.log", ready_path=ready_path)


def ragwatch_server(name: str, work: Path, env: dict[str, str]) -> Server:
    """``ragwatch serve`` (``python -m service serve``) with ``env`` over a clean environment."""
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAGWATCH_", "OPENAI_", "OTEL_"))}
    full = {**base, "RAGWATCH_PORT": str(port), "RAGWATCH_HOST": "127.0.0.1", **env}
    argv = [sys.executable, "-m", "service", "serve"]
    return Server(name, argv, full, port, work / f"{name}.log", ready_path="/health/ready")


class RedisServer:
    """A private ``redis-server`` on a free port, pinned to the load core (it stands for another machine)."""

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.work = work
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.work.mkdir(parents=True, exist_ok=True)
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.work)]
        self.process = subprocess.Popen(
            pinned(LOAD_CORE, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.command("PING").startswith(b"+PONG"):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def command(self, *words: str) -> bytes:
        """One inline command on a fresh connection; the whole raw reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            conn.sendall((" ".join(words) + "\r\n").encode())
            return _read_reply(conn)

    def version(self) -> str:
        for line in self.command("INFO", "server").decode().splitlines():
            if line.startswith("redis_version:"):
                return line.split(":", 1)[1].strip()
        return "unknown"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def _read_reply(conn: socket.socket) -> bytes:
    """A simple or bulk reply, read whole (bulk replies announce their length)."""
    data = b""
    while b"\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    if data.startswith(b"$"):
        header, _, rest = data.partition(b"\r\n")
        size = int(header[1:])
        while len(rest) < size + 2 and size >= 0:
            chunk = conn.recv(65536)
            if not chunk:
                break
            rest += chunk
        return rest[:size] if size >= 0 else b""
    return data


class OtlpSink:
    """The OTLP/HTTP collector stand-in (``bench.otlp_sink``) in its own process on the load core."""

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work / "otlp-sink.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> OtlpSink:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                pinned(LOAD_CORE, [sys.executable, "-m", "bench.otlp_sink", "--port", str(self.port)]),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/stats", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError("the OTLP sink did not start")

    def stats(self) -> dict[str, int]:
        counts: dict[str, int] = httpx.get(self.url + "/stats", timeout=5).json()
        return counts

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
