"""Running one sandboxed process: start it, feed stdin, read both pipes under a cap,
enforce the wall clock, and kill everything it started.

Every backend ends up here with an argv (``bwrap ...``, ``runsc ... run``, or the
command itself): the differences are in how the sandbox is built and how it is killed
as a whole, which a :class:`Child` carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from agentd.sandbox._limits import ExecResult, Limits, signal_death

_CHUNK = 65536
_DRAIN_S = 2.0  # reading what is left after the process ended (a straggler may hold a pipe)


class Child:
    """A started sandbox: its top process and how to kill every process in it.

    ``kill`` is synchronous and idempotent: it SIGKILLs the process group of the top
    process (and whatever ``extra_kill`` knows about: bubblewrap's pid 1, gVisor's
    container). ``close`` kills, reaps and runs ``cleanup`` (gVisor's ``runsc
    delete``, temporary bundles).
    """

    def __init__(self, proc: asyncio.subprocess.Process, *, started: float,
                 negative_is_signal: bool,
                 extra_kill: Callable[[], None] | None = None,
                 cleanup: Callable[[], Awaitable[None]] | None = None) -> None:
        self.proc = proc
        self.started = started
        self.negative_is_signal = negative_is_signal
        self._extra_kill = extra_kill
        self._cleanup = cleanup
        self._closed = False

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self._extra_kill is not None:
            self._extra_kill()

    async def close(self) -> None:
        """Kill everything, reap the top process, release what the sandbox held."""
        self.kill()
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.shield(self._finish())
        except asyncio.CancelledError:
            raise

    async def _finish(self) -> None:
        await self.proc.wait()
        for stream in (self.proc.stdin,):
            if stream is not None:
                stream.close()
        if self._cleanup is not None:
            await self._cleanup()


async def launch(argv: Sequence[str], *, env: dict[str, str], cwd: str | None = None,
                 pass_fds: Sequence[int] = (), stdin_pipe: bool,
                 spawn: dict[str, Any]) -> tuple[asyncio.subprocess.Process, float]:
    """Start ``argv`` with both outputs piped; ``spawn`` from ``spawn_kwargs``."""
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin_pipe else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=env, cwd=cwd, pass_fds=tuple(pass_fds), limit=_CHUNK, **spawn)
    return proc, started


class Capture:
    """Both output streams under one cap: each stream keeps at most ``cap`` bytes (so
    memory stays bounded), the result keeps ``cap`` bytes of the two together (stderr
    is not starved by a stdout flood), and ``flooded`` is set once more than four
    times the cap has been read."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.kept: dict[str, bytearray] = {"out": bytearray(), "err": bytearray()}
        self.seen = 0
        self.dropped = False
        self.flooded = asyncio.Event()

    def feed(self, stream: str, data: bytes) -> None:
        self.seen += len(data)
        buf = self.kept[stream]
        room = self.cap - len(buf)
        if room >= len(data):
            buf += data
        else:
            if room > 0:
                buf += data[:room]
            self.dropped = True
        if self.seen > 4 * self.cap:
            self.flooded.set()

    def result(self) -> tuple[str, str, bool]:
        out, err = bytes(self.kept["out"]), bytes(self.kept["err"])
        truncated = self.dropped
        if len(out) + len(err) > self.cap:
            truncated = True
            err_keep = min(len(err), max(self.cap // 2, self.cap - len(out)))
            out, err = out[:self.cap - err_keep], err[:err_keep]
        return (out.decode("utf-8", errors="replace"),
                err.decode("utf-8", errors="replace"), truncated)

    def reset(self) -> None:
        self.kept = {"out": bytearray(), "err": bytearray()}
        self.seen = 0
        self.dropped = False
        self.flooded = asyncio.Event()


async def _pump(reader: asyncio.StreamReader | None, stream: str, capture: Capture) -> None:
    if reader is None:
        return
    while True:
        chunk = await reader.read(_CHUNK)
        if not chunk:
            return
        capture.feed(stream, chunk)


async def _feed(writer: asyncio.StreamWriter | None, data: bytes | None) -> None:
    if writer is None:
        return
    try:
        if data:
            writer.write(data)
            await writer.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await writer.wait_closed()


async def execute(child: Child, *, stdin: bytes | None, limits: Limits) -> ExecResult:
    """Run ``child`` to its end (or kill it at the wall clock or on an output flood)
    and collect its result. Cancelling this kills the sandbox."""
    proc = child.proc
    capture = Capture(limits.output_bytes)
    tasks = [asyncio.ensure_future(_pump(proc.stdout, "out", capture)),
             asyncio.ensure_future(_pump(proc.stderr, "err", capture)),
             asyncio.ensure_future(_feed(proc.stdin, stdin))]
    waiter = asyncio.ensure_future(proc.wait())
    flood = asyncio.ensure_future(capture.flooded.wait())
    killed: str | None = None
    try:
        done, _ = await asyncio.wait({waiter, flood}, timeout=limits.wall_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            killed = "output" if flood in done else "wall_time"
        # The top process ended (or is to be killed): whatever it left behind goes
        # too, as a pid namespace would take it (``sleep 1000 &`` must not survive).
        child.kill()
        await waiter
        _, pending = await asyncio.wait(tasks, timeout=_DRAIN_S)
        for task in pending:
            task.cancel()
    except BaseException:
        child.kill()
        raise
    finally:
        flood.cancel()
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, flood, return_exceptions=True)
        await child.close()
    duration_ms = (time.perf_counter() - child.started) * 1000
    stdout, stderr, truncated = capture.result()
    code: int | None
    if killed is not None:
        code = None
    else:
        assert proc.returncode is not None
        code, killed = signal_death(proc.returncode,
                                    negative_is_signal=child.negative_is_signal)
    return ExecResult(exit_code=code, stdout=stdout, stderr=stderr, truncated=truncated,
                      timed_out=killed == "wall_time", killed=killed,
                      duration_ms=duration_ms)
