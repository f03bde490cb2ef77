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

from agentd.sandbox.cgroups import Cgroup
from agentd.sandbox.limits import ExecResult, Limits, signal_death

__all__ = ["Capture", "Child", "PipeReader", "PipeWriter", "execute", "launch"]

_CHUNK = 65536
_DRAIN_S = 2.0  # reading what is left after the process ended (a straggler may hold a pipe)


class PipeReader:
    """The daemon's end of an output pipe, read without blocking the event loop.

    The pipes are ours rather than ``asyncio``'s: ``Process.wait()`` would otherwise
    wait for every holder of the pipes to close them, and a process left running in
    the background holds them as long as it likes.
    """

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None

    async def read(self, size: int = _CHUNK) -> bytes:
        """Up to ``size`` bytes; ``b""`` at the end (or once closed)."""
        while self.fd >= 0:
            try:
                return os.read(self.fd, size)
            except BlockingIOError:
                pass
            self._waiter = self._loop.create_future()
            self._loop.add_reader(self.fd, _wake, self._waiter)
            try:
                await self._waiter
            finally:
                self._waiter = None
                if self.fd >= 0:
                    self._loop.remove_reader(self.fd)
        return b""

    def drain(self, limit: int = 1 << 20) -> bytes:
        """What the pipe holds now, up to ``limit`` bytes, without waiting: ``b""`` when
        it holds nothing (or is closed). It reads past a reader waiting in
        :meth:`read`, which then finds the pipe as this left it."""
        chunks: list[bytes] = []
        size = 0
        while self.fd >= 0 and size < limit:
            try:
                chunk = os.read(self.fd, min(_CHUNK, limit - size))
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if self.fd >= 0:
            self._loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1
        if self._waiter is not None:
            _wake(self._waiter)


class PipeWriter:
    """The daemon's end of the stdin pipe."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self._loop = asyncio.get_running_loop()

    async def write(self, data: bytes) -> None:
        """Write all of ``data``; BrokenPipeError when the reader is gone."""
        view = memoryview(data)
        while view:
            if self.fd < 0:
                raise BrokenPipeError("stdin is closed")
            try:
                view = view[os.write(self.fd, view):]
                continue
            except BlockingIOError:
                pass
            waiter = self._loop.create_future()
            self._loop.add_writer(self.fd, _wake, waiter)
            try:
                await waiter
            finally:
                if self.fd >= 0:
                    self._loop.remove_writer(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            self._loop.remove_writer(self.fd)
            os.close(self.fd)
            self.fd = -1


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Child:
    """A started sandbox: its top process, our ends of its pipes, and how to kill
    every process in it.

    ``kill`` is synchronous and idempotent: it SIGKILLs the process group of the top
    process and whatever ``extra_kill`` knows about (bubblewrap's pid 1). ``stop``
    first awaits ``extra_stop`` (gVisor's ``runsc kill`` and ``delete``), then kills.
    ``close`` stops, reaps, closes the pipes and releases what the sandbox held
    (``cleanup``) and its ``cgroup`` (whatever is left in it is killed, in a thread);
    it is idempotent and not interrupted by cancelling its caller.
    """

    def __init__(self, proc: asyncio.subprocess.Process, *, started: float,
                 stdout: PipeReader, stderr: PipeReader, stdin: PipeWriter | None,
                 negative_is_signal: bool,
                 extra_kill: Callable[[], None] | None = None,
                 extra_stop: Callable[[], Awaitable[None]] | None = None,
                 cleanup: Callable[[], None] | None = None,
                 cgroup: Cgroup | None = None) -> None:
        self.proc = proc
        self.cgroup = cgroup
        self.started = started
        self.stdout = stdout
        self.stderr = stderr
        self.stdin = stdin
        self.negative_is_signal = negative_is_signal
        self._extra_kill = extra_kill
        self._extra_stop = extra_stop
        self._cleanup = cleanup
        self._stopped = False
        self._closed = False

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self._extra_kill is not None:
            self._extra_kill()

    async def stop(self) -> None:
        if self._extra_stop is not None and not self._stopped:
            self._stopped = True
            await self._extra_stop()
        self.kill()

    async def close(self) -> None:
        if self._closed:
            self.kill()
            return
        self._closed = True
        await asyncio.shield(self._finish())

    async def _finish(self) -> None:
        try:
            await self.stop()
            await self.proc.wait()
        finally:
            for pipe in (self.stdin, self.stdout, self.stderr):
                if pipe is not None:
                    pipe.close()
            if self._cleanup is not None:
                self._cleanup()
            # Usually empty by now: removed at once; else waited for in a thread.
            if self.cgroup is not None and not self.cgroup.try_remove():
                await asyncio.to_thread(self.cgroup.remove)

    def oom_kills(self) -> int:
        """Processes of this sandbox the kernel killed at its memory cap so far."""
        return self.cgroup.oom_kills() if self.cgroup is not None else 0


async def launch(argv: Sequence[str], *, env: dict[str, str], pass_fds: Sequence[int] = (),
                 stdin_pipe: bool, spawn: dict[str, Any], negative_is_signal: bool,
                 extra_kill: Callable[[], None] | None = None,
                 extra_stop: Callable[[], Awaitable[None]] | None = None,
                 cleanup: Callable[[], None] | None = None,
                 cgroup: Cgroup | None = None) -> Child:
    """Start ``argv`` with both outputs (and stdin, if asked) on pipes of ours;
    ``spawn`` comes from ``spawn_kwargs`` (which moves it into ``cgroup``, removed
    when the Child is closed)."""
    fds: list[int] = []
    try:
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        fds += [out_r, out_w]
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        fds += [err_r, err_w]
        in_r = in_w = -1
        if stdin_pipe:
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
            fds += [in_r, in_w]
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=in_r if stdin_pipe else asyncio.subprocess.DEVNULL,
            stdout=out_w, stderr=err_w, env=env, pass_fds=tuple(pass_fds), **spawn)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    for fd in (out_w, err_w, in_r):
        if fd >= 0:
            os.close(fd)
    return Child(proc, started=started, stdout=PipeReader(out_r), stderr=PipeReader(err_r),
                 stdin=PipeWriter(in_w) if stdin_pipe else None,
                 negative_is_signal=negative_is_signal, extra_kill=extra_kill,
                 extra_stop=extra_stop, cleanup=cleanup, cgroup=cgroup)


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


async def _pump(reader: PipeReader, stream: str, capture: Capture) -> None:
    while True:
        chunk = await reader.read(_CHUNK)
        if not chunk:
            return
        capture.feed(stream, chunk)


async def _feed(writer: PipeWriter | None, data: bytes | None) -> None:
    if writer is None:
        return
    try:
        if data:
            await writer.write(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        writer.close()


async def execute(child: Child, *, stdin: bytes | None, limits: Limits) -> ExecResult:
    """Run ``child`` to its end (or kill it at the wall clock or on an output flood)
    and collect its result. Cancelling this kills the sandbox."""
    proc = child.proc
    capture = Capture(limits.output_bytes)
    tasks = [asyncio.ensure_future(_pump(child.stdout, "out", capture)),
             asyncio.ensure_future(_pump(child.stderr, "err", capture)),
             asyncio.ensure_future(_feed(child.stdin, stdin))]
    waiter = asyncio.ensure_future(proc.wait())
    flood = asyncio.ensure_future(capture.flooded.wait())
    killed: str | None = None
    oom = 0
    try:
        done, _ = await asyncio.wait({waiter, flood}, timeout=limits.wall_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            killed = "output" if flood in done else "wall_time"
        # The top process ended (or is to be killed): whatever it left behind goes
        # too, as a pid namespace would take it (``sleep 1000 &`` must not survive).
        await child.stop()
        await waiter
        await asyncio.wait(tasks, timeout=_DRAIN_S)
    except BaseException:
        child.kill()
        raise
    finally:
        for task in (*tasks, flood, waiter):
            task.cancel()
        await asyncio.gather(*tasks, flood, waiter, return_exceptions=True)
        oom = child.oom_kills()  # read before close removes the cgroup
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
        if oom:
            killed = "memory"
    return ExecResult(exit_code=code, stdout=stdout, stderr=stderr, truncated=truncated,
                      timed_out=killed == "wall_time", killed=killed,
                      duration_ms=duration_ms)
