"""The compiled load generators, pinned to the load core: wrk for fixed concurrency, ``pacer`` for fixed rate.

wrk (Debian's package) is closed-loop: each of its connections sends the next request when the previous
answer arrives, which finds the most a server can do at that concurrency. Its latency figures suffer from
coordinated omission, so they are kept only as context. Fixed-rate latency comes from ``bench/pacer.c``
(wrk2's model: latency counted from when each request was due), compiled here with the system C compiler.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import LOAD_CORE, pinned

HERE = Path(__file__).resolve().parent
BUILD = HERE / ".build"
_UNITS_US = {"us": 1.0, "ms": 1_000.0, "s": 1_000_000.0, "m": 60_000_000.0}


@dataclass(frozen=True)
class HttpRequest:
    """What the load generators send: one method, path and header set, and bodies that rotate."""

    method: str = "GET"
    path: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    bodies: tuple[str, ...] = ()

    def raw(self, port: int, body: str | None) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        payload = (body or "").encode()
        if body is not None:
            lines.append(f"Content-Length: {len(payload)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    requests: int
    duration_s: float
    non_2xx: int
    socket_errors: int
    latency_us: dict[str, float]
    """wrk's own percentiles (closed loop: coordinated omission applies)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests_per_s": self.requests_per_s,
            "requests": self.requests,
            "duration_s": self.duration_s,
            "non_2xx": self.non_2xx,
            "socket_errors": self.socket_errors,
            "latency_us_closed_loop": self.latency_us,
        }


def wrk_version() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        return "missing"
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    found = re.search(r"wrk (\S+)", done.stdout + done.stderr)
    return found.group(1) if found else "unknown"


def _lua_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    return f"'{escaped}'"


def wrk_script(request: HttpRequest, path: Path) -> Path:
    """A wrk Lua script sending ``request`` (bodies rotate, one per request)."""
    lines = [f"wrk.method = {_lua_string(request.method)}", f"wrk.path = {_lua_string(request.path)}"]
    lines += [f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in request.headers.items()]
    if request.bodies:
        lines.append("local bodies = {" + ", ".join(_lua_string(b) for b in request.bodies) + "}")
        lines.append("local n = 0")
        lines.append("request = function()")
        lines.append("  n = n + 1")
        lines.append("  return wrk.format(nil, nil, nil, bodies[(n % #bodies) + 1])")
        lines.append("end")
    path.write_text("\n".join(lines) + "\n")
    return path


def run_wrk(
    port: int, request: HttpRequest, script: Path, *, concurrency: int, duration_s: float, timeout_s: float = 10
) -> WrkResult:
    """One wrk run: one thread on the load core, ``concurrency`` keep-alive connections."""
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(duration_s, 1):.0f}s", f"--timeout={timeout_s:.0f}s"]
    argv += ["--latency", "-s", str(wrk_script(request, script)), f"http://127.0.0.1:{port}{request.path}"]
    done = subprocess.run(pinned(LOAD_CORE, argv), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse_wrk(done.stdout)


def parse_wrk(text: str) -> WrkResult:
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    if rate is None or total is None:
        raise RuntimeError(f"unexpected wrk output:\n{text}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    latency: dict[str, float] = {}
    for pct, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", text, flags=re.MULTILINE):
        latency[f"p{pct}"] = round(float(value) * _UNITS_US[unit], 1)
    return WrkResult(
        requests_per_s=float(rate.group(1)),
        requests=int(total.group(1)),
        duration_s=float(total.group(2)) * _UNITS_US[total.group(3)] / 1_000_000,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(v) for v in errors.groups()) if errors else 0,
        latency_us=latency,
    )


def pacer_binary() -> Path:
    """``bench/.build/pacer``, compiled from ``bench/pacer.c`` when missing or older than the source."""
    source = HERE / "pacer.c"
    binary = BUILD / "pacer"
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("a C compiler (cc) is needed to build bench/pacer.c")
    BUILD.mkdir(exist_ok=True)
    subprocess.run([compiler, "-O2", "-Wall", "-o", str(binary), str(source)], check=True)
    return binary


def run_pacer(
    port: int,
    request: HttpRequest,
    work: Path,
    *,
    rate: float,
    duration_s: float | None = None,
    count: int | None = None,
    connections: int = 32,
) -> dict[str, Any]:
    """One fixed-rate run; the pacer's JSON (latency in microseconds, from each request's due time)."""
    files: list[str] = []
    for index, body in enumerate(request.bodies or (None,)):
        path = work / f"request-{port}-{index}.http"
        path.write_bytes(request.raw(port, body))
        files += ["-f", str(path)]
    argv = [str(pacer_binary()), "-p", str(port), "-r", f"{rate:.3f}", "-c", str(connections), *files]
    argv += ["-n", str(count)] if count is not None else ["-d", f"{duration_s or 1:.3f}"]
    done = subprocess.run(pinned(LOAD_CORE, argv), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"pacer failed ({done.returncode}): {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result
