"""Shared helpers for the benchmarks: server subprocesses, closed-loop load, SSE, statistics.

Everything here talks to 127.0.0.1 only and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import aiohttp
import orjson

__all__ = [
    "LocalDaemon",
    "PhaseStats",
    "ServerProcess",
    "SseFrame",
    "TurnResult",
    "free_port",
    "info",
    "iter_sse",
    "percentile",
    "run_phase",
    "wait_ready",
]


def info(message: str) -> None:
    """Progress goes to stderr; stdout is reserved for the one JSON line."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of already sorted values."""
    if not sorted_values:
        return None
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _proc_times(pid: int) -> tuple[float, float] | None:
    """User and system CPU seconds of a process (all its threads), from /proc; Linux
    only."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def _proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads): its CPU-time clock
    (``clock_getcpuclockid``), to the nanosecond; else /proc's figures, in clock ticks
    (10 ms: a batch of a few turns measured in ticks is mostly rounding)."""
    clock = _cpu_clock(pid)
    if clock is not None:
        try:
            return time.clock_gettime_ns(clock) / 1e9
        except OSError:
            pass  # (it exited)
    times = _proc_times(pid)
    return None if times is None else times[0] + times[1]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _cpu_clock(pid: int) -> int | None:
    """The id of the clock that counts ``pid``'s CPU time, if this libc has one."""
    libc = _libc()
    clock = ctypes.c_int()
    try:
        if libc is None or libc.clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
            return None
    except AttributeError:
        return None
    return clock.value


def proc_sys_s(pid: int) -> float | None:
    """System CPU seconds of a process (all its threads), from /proc; Linux only."""
    times = _proc_times(pid)
    return None if times is None else times[1]


def _children_cpu_s(pid: int) -> float:
    """User + system CPU seconds of the live children of a process (the trace export
    worker, sandboxes): those /proc/PID/stat's own figures leave out until reaped."""
    total = 0.0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0.0
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            total += (_proc_cpu_s(int(child)) or 0.0) + _children_cpu_s(int(child))
    return total


# --------------------------------------------------------------------------- processes


class ServerProcess:
    """A server started as a subprocess, its output going to a log file."""

    def __init__(self, name: str, cmd: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.cmd = cmd
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.shutdown_s: float | None = None
        self.killed = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        info(f"starting {self.name}: {' '.join(self.cmd)}")
        with self.log_path.open("wb") as log:
            # A session of its own: a Ctrl-C on the bench does not reach the server
            # directly; the finally blocks stop it in order.
            self.proc = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def cpu_s(self) -> float | None:
        return _proc_cpu_s(self.proc.pid) if self.proc and not self.exited() else None

    def sys_s(self) -> float | None:
        """System CPU seconds (the kernel's work for it: sockets, files, page faults)."""
        return proc_sys_s(self.proc.pid) if self.proc and not self.exited() else None

    def children_cpu_s(self) -> float | None:
        return _children_cpu_s(self.proc.pid) if self.proc and not self.exited() else None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 20.0) -> int | None:
        """Send ``sig``, wait up to ``timeout_s``, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            t0 = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                info(f"{self.name} still running {timeout_s:.0f}s after {sig.name}; killing it")
                self.killed = True
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.shutdown_s = time.monotonic() - t0
        return self.proc.returncode


class LocalDaemon:
    """``agentd serve`` on a free port of 127.0.0.1 with ``home`` (no demo agent, the
    bench's ``token``, ``env`` on top), as a context manager: entered once ``/health``
    answers, stopped on exit."""

    def __init__(self, home: Path, token: str, env: dict[str, str] | None = None,
                 *, ready_s: float = 120.0) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ready_s = ready_s
        full = {**os.environ, "AGENTD_HOME": str(home), "AGENTD_DEMO_AGENT": "false",
                "AGENTD_LOG_LEVEL": "WARNING", "AGENTD_TOKEN": token, **(env or {})}
        self.server = ServerProcess(
            "agentd", [sys.executable, "-m", "agentd", "serve", "--port", str(self.port)],
            home / "daemon.log", full)

    def __enter__(self) -> Self:
        import httpx

        self.server.start()
        deadline = time.monotonic() + self.ready_s
        while time.monotonic() < deadline:
            if self.server.exited():
                raise RuntimeError(f"daemon exited: {self.server.log_tail()}")
            try:
                if httpx.get(f"{self.base}/health", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"daemon did not come up within {self.ready_s:g}s")

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    def settle(self, idle_ms: float = 2.0, window_s: float = 0.25, limit_s: float = 5.0
               ) -> None:
        """Wait until the daemon is idle (less than ``idle_ms`` of CPU in a
        ``window_s`` window) so that the after-work of what came before (the WAL
        checkpoint of a seeding's writes, a collection of its garbage) is not counted
        in the next measured batch; gives up after ``limit_s``."""
        deadline = time.monotonic() + limit_s
        last = self.server.cpu_s()
        while last is not None and time.monotonic() < deadline:
            time.sleep(window_s)
            now = self.server.cpu_s()
            if now is None or (now - last) * 1000 < idle_ms:
                return
            last = now


async def wait_ready(
    http: aiohttp.ClientSession,
    url: str,
    timeout_s: float,
    server: ServerProcess | None = None,
) -> dict[str, Any]:
    """Poll ``url`` until it answers 200 with JSON; fail early if ``server`` exits."""
    deadline = time.monotonic() + timeout_s
    last_error = "no answer"
    while time.monotonic() < deadline:
        if server is not None and server.exited():
            assert server.proc is not None
            raise RuntimeError(
                f"{server.name} exited with {server.proc.returncode} before it was ready;"
                f" log tail:\n{server.log_tail()}"
            )
        try:
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                raw = await resp.read()
                if resp.status == 200:
                    body: dict[str, Any] = orjson.loads(raw)
                    return body
                last_error = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            last_error = repr(exc)
        await asyncio.sleep(0.1)
    tail = f"; log tail:\n{server.log_tail()}" if server is not None else ""
    raise RuntimeError(f"{url} not ready after {timeout_s:.0f}s ({last_error}){tail}")


# --------------------------------------------------------------------------- SSE


@dataclass
class SseFrame:
    event: str = "message"
    data: str = ""
    id: str | None = None

    def json(self) -> Any:
        return orjson.loads(self.data) if self.data else None


async def iter_sse(content: aiohttp.StreamReader) -> AsyncGenerator[SseFrame, None]:
    """Parse a Server-Sent-Events body into frames (a frame ends at a blank line)."""
    event: str | None = None
    data: list[str] = []
    frame_id: str | None = None
    while True:
        raw = await content.readline()
        if not raw:  # EOF; an unterminated last frame is dropped, as browsers do
            return
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data or event is not None:
                yield SseFrame(event or "message", "\n".join(data), frame_id)
            event, data, frame_id = None, [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            frame_id = value


# --------------------------------------------------------------------------- load


@dataclass
class TurnResult:
    ok: bool
    latency_ms: float
    first_event_ms: float | None = None
    error: str | None = None


@dataclass
class PhaseStats:
    name: str
    clients: int
    elapsed_s: float
    results: list[TurnResult]
    server_cpu_s: float | None = None
    client_cpu_s: float | None = None
    #: The server's children's CPU over the phase (its trace export worker...).
    children_cpu_s: float | None = None
    #: Of ``server_cpu_s``, the kernel's part (its system calls: sockets, the store's
    #: writes and fsyncs, thread hand-offs), in /proc's clock ticks.
    server_sys_s: float | None = None
    error_samples: list[str] = field(default_factory=list)

    @property
    def turns(self) -> int:
        return sum(1 for r in self.results if r.ok)

    @property
    def errors(self) -> int:
        return sum(1 for r in self.results if not r.ok)

    def figures(self, prefix: str, streamed: bool) -> dict[str, Any]:
        """This phase's figures: ``{prefix}turns_per_s`` etc., or for a streamed phase
        ``{prefix}stream_turns_per_s`` etc. plus ``{prefix}first_event_p50_ms``/``_p99_ms``."""
        p = prefix + ("stream_" if streamed else "")
        lat = sorted(r.latency_ms for r in self.results if r.ok)
        out: dict[str, Any] = {
            f"{p}turns": self.turns,
            f"{p}turns_per_s": _r(self.turns / self.elapsed_s if self.elapsed_s else None),
            f"{p}p50_ms": _r(percentile(lat, 50)),
            f"{p}p99_ms": _r(percentile(lat, 99)),
            f"{p}errors": self.errors,
        }
        if streamed:
            first = sorted(
                r.first_event_ms for r in self.results if r.ok and r.first_event_ms is not None
            )
            out[f"{prefix}first_event_p50_ms"] = _r(percentile(first, 50))
            out[f"{prefix}first_event_p99_ms"] = _r(percentile(first, 99))
        cpu = self.server_cpu_s
        out[f"{p}server_cpu_ms_per_turn"] = _r(
            cpu * 1000 / self.turns if cpu is not None and self.turns else None, 3
        )
        sys_s = self.server_sys_s
        out[f"{p}server_sys_ms_per_turn"] = _r(
            sys_s * 1000 / self.turns if sys_s is not None and self.turns else None, 3
        )
        kids = self.children_cpu_s
        if kids:
            out[f"{p}children_cpu_ms_per_turn"] = _r(
                kids * 1000 / self.turns if self.turns else None, 3)
        client = self.client_cpu_s
        out[f"{p}client_cpu_util"] = _r(
            client / self.elapsed_s if client is not None and self.elapsed_s else None, 2
        )
        if self.error_samples:
            out[f"{p}error_samples"] = self.error_samples
        return out


def _spent(before: float | None, after: float | None) -> float | None:
    """What a counter read at a phase's start and end grew by (None: unread)."""
    return None if before is None or after is None else after - before


def _r(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


TurnFn = Callable[[int], Awaitable[TurnResult]]


async def run_phase(
    name: str,
    clients: int,
    turn: TurnFn,
    *,
    seconds: float,
    max_turns: int | None = None,
    server: ServerProcess | None = None,
) -> PhaseStats:
    """Closed-loop load: ``clients`` workers, each calling ``turn(client_index)`` in a loop.

    The phase ends after ``seconds`` (no new turn starts later) or once ``max_turns``
    turns have been started, whichever comes first. A failed turn is followed by a short
    pause so that a broken server is not hammered in a tight loop.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    results: list[TurnResult] = []
    samples: list[str] = []
    started = 0

    async def worker(index: int) -> None:
        nonlocal started
        while loop.time() < deadline and (max_turns is None or started < max_turns):
            if server is not None and server.exited():
                return
            started += 1
            res = await turn(index)
            results.append(res)
            if not res.ok:
                if res.error and len(samples) < 5 and res.error not in samples:
                    samples.append(res.error)
                    info(f"{name}: error: {res.error}")
                await asyncio.sleep(0.02)

    cpu0 = server.cpu_s() if server else None
    sys0 = server.sys_s() if server else None
    kids0 = server.children_cpu_s() if server else None
    client0 = time.process_time()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    elapsed = time.perf_counter() - t0
    client_cpu = time.process_time() - client0
    cpu1 = server.cpu_s() if server else None
    sys1 = server.sys_s() if server else None
    kids1 = server.children_cpu_s() if server else None
    if server is not None and server.exited():
        raise RuntimeError(f"{server.name} exited during {name}; log tail:\n{server.log_tail()}")
    return PhaseStats(
        name=name,
        clients=clients,
        elapsed_s=elapsed,
        results=results,
        server_cpu_s=_spent(cpu0, cpu1),
        client_cpu_s=client_cpu,
        children_cpu_s=_spent(kids0, kids1),
        server_sys_s=_spent(sys0, sys1),
        error_samples=samples,
    )
