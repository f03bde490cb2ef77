"""A persistent shell in a sandbox: one long-lived ``bash`` per agent session, so that
``cd`` and ``export`` last from one command to the next, as in a terminal.

How a command is sent: as a single-quoted assignment (so no quoting, unbalanced
construct or heredoc in it can reach the shell's own parser), then one line that
``eval``s it with stdin from ``/dev/null`` and prints a sentinel on stdout (carrying
``$?``) and another on stderr. The sentinels hold a random nonce per call, written in
two pieces so that even ``set -x`` does not echo it whole: output that imitates a
sentinel cannot end a command early. The output is read up to the sentinels, under
the backend's cap.

When a command runs past its time (``timeout_s``, else ``Limits.wall_s``) or floods its
output, the whole sandbox is killed; so is it when the shell exits (``exit``). The next
command then starts a fresh shell, and its stderr begins with a note saying so (the
working directory and variables were reset); :attr:`PersistentShell.restarts` counts
these.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agentd.errors import ToolError
from agentd.sandbox.limits import ExecResult, Limits, signal_death
from agentd.sandbox.process import Capture, Child, PipeReader

__all__ = ["PersistentShell", "ShellPool"]

_CHUNK = 65536
_TAG = "__agentd_"
_MAX_STATUS = 16  # bytes between an stdout sentinel and its newline ("255")
_DRAIN_S = 2.0


def _quote(command: str) -> str:
    return "'" + command.replace("'", "'\\''") + "'"


class _Stream:
    """One output pipe of the shell, read up to a sentinel; bytes after the sentinel
    (a background job writing) are kept for the next command."""

    def __init__(self, reader: PipeReader, stream: str) -> None:
        self.reader = reader
        self.stream = stream
        self.pending = bytearray()

    async def until(self, marker: bytes, capture: Capture) -> bytes | None:
        """Feed ``capture`` up to ``marker``; return what follows it on its line
        (None at end of file)."""
        buf = self.pending
        self.pending = bytearray()
        keep = len(marker) + _MAX_STATUS
        while True:
            at = buf.find(marker)
            if at >= 0:
                end = buf.find(b"\n", at + len(marker))
                if end >= 0 or len(buf) - at > keep:
                    end = end if end >= 0 else len(buf)
                    capture.feed(self.stream, bytes(buf[:at]))
                    tail = bytes(buf[at + len(marker):end])
                    self.pending = buf[end + 1:]
                    return tail
                if at > 0:
                    capture.feed(self.stream, bytes(buf[:at]))
                    del buf[:at]
            elif len(buf) >= len(marker):
                cut = len(buf) - len(marker) + 1
                capture.feed(self.stream, bytes(buf[:cut]))
                del buf[:cut]
            chunk = await self.reader.read(_CHUNK)
            if not chunk:
                capture.feed(self.stream, bytes(buf))
                return None
            buf += chunk


class PersistentShell:
    """A long-lived shell in a sandbox (make one with ``Backend.shell``).

    Commands run one at a time (concurrent calls wait their turn).

    Attributes:
        backend: the name of the backend it runs in.
        restarts: how many times a fresh shell replaced one that was killed or exited.
        restarted: whether the last :meth:`run` ran in such a fresh shell.
        last_used: ``time.monotonic()`` at the end of the last command.
        tag: what its sandbox was made with beyond the workspace (the read-only
            folders bound in it): :meth:`ShellPool.get` replaces a shell whose tag
            is not the one asked for.
        notice: said (on stderr) before the next command's output, once.
    """

    def __init__(self, start: Callable[[], Awaitable[Child]], *, limits: Limits,
                 backend: str = "", tag: str = "",
                 on_kill: Callable[[str], None] | None = None) -> None:
        """``on_kill``: told the reason of each command killed (the daemon's metrics)."""
        self._start = start
        self._on_kill = on_kill
        self.limits = limits
        self.backend = backend
        self.tag = tag
        self.notice = ""
        self.restarts = 0
        self.restarted = False
        self.last_used = time.monotonic()
        self._child: Child | None = None
        self._out: _Stream | None = None
        self._err: _Stream | None = None
        self._exited: asyncio.Future[int] | None = None
        self._lost: str | None = None  # why the previous shell is gone
        self._closed = False
        self._lock = asyncio.Lock()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    async def start(self) -> None:
        """Start the shell now (``run`` would otherwise start it on first use)."""
        async with self._lock:
            if self._child is None and not self._closed:
                try:
                    await self._spawn()
                except BaseException:
                    await self._discard("could not start")
                    raise

    async def _spawn(self) -> None:
        child = await self._start()
        self._child = child  # from here on, _discard ends it
        self._out = _Stream(child.stdout, "out")
        self._err = _Stream(child.stderr, "err")
        self._exited = asyncio.ensure_future(child.proc.wait())
        # ``__agentd_r N`` sets $? to N without a fork: each command sees the
        # status of the one before, as in a terminal.
        await self._send(b"__agentd_r() { return \"$1\"; }; __agentd_s=0\n")

    async def _send(self, data: bytes) -> None:
        assert self._child is not None and self._child.stdin is not None
        await self._child.stdin.write(data)

    async def run(self, command: str, *, timeout_s: float | None = None) -> ExecResult:
        """Run ``command`` (a shell command line, or several lines) in the shell.

        Raises:
            ToolError: ``shell_closed`` after :meth:`close`; ``invalid_command`` for a
                command with NUL characters.
        """
        if "\x00" in command:
            raise ToolError("a command cannot contain NUL characters",
                            code="invalid_command")
        wall = self.limits.wall_s if timeout_s is None else timeout_s
        async with self._lock:
            if self._closed:
                raise ToolError("this shell was closed", code="shell_closed")
            note, self.notice = self.notice, ""
            self.restarted = False
            try:
                if self._child is None:
                    if self._lost is not None:
                        note += (f"[agentd] the previous shell {self._lost}; this command "
                                 "ran in a new shell (working directory and variables were "
                                 "reset)\n")
                        self.restarts += 1
                        self.restarted = True
                        self._lost = None
                    await self._spawn()
                result = await self._exchange(command, wall)
            except BaseException:
                await self._discard("was interrupted")
                raise
            finally:
                self.last_used = time.monotonic()
            if result.killed and self._on_kill is not None:
                self._on_kill(result.killed)
            if note:
                result = ExecResult(exit_code=result.exit_code, stdout=result.stdout,
                                    stderr=note + result.stderr,
                                    truncated=result.truncated,
                                    timed_out=result.timed_out, killed=result.killed,
                                    duration_ms=result.duration_ms)
            return result

    async def _exchange(self, command: str, wall: float) -> ExecResult:
        assert self._child is not None and self._out is not None and self._err is not None
        assert self._exited is not None
        child, out, err, exited = self._child, self._out, self._err, self._exited
        nonce = secrets.token_hex(16)
        out_marker = f"{_TAG}{nonce}:".encode()
        err_marker = f"{_TAG}{nonce};".encode()
        script = (f"__agentd_c={_quote(command)}\n"
                  f"__agentd_r \"$__agentd_s\"; eval \"$__agentd_c\" </dev/null; "
                  f"__agentd_s=$?; printf '%s%s:%s\\n' '{_TAG}' '{nonce}' \"$__agentd_s\"; "
                  f"printf '%s%s;\\n' '{_TAG}' '{nonce}' >&2\n").encode()
        capture = Capture(self.limits.output_bytes)
        oom_before = child.oom_kills()
        started = time.perf_counter()
        readers = [asyncio.ensure_future(out.until(out_marker, capture)),
                   asyncio.ensure_future(err.until(err_marker, capture))]
        all_read = asyncio.gather(*readers, return_exceptions=True)
        flood = asyncio.ensure_future(capture.flooded.wait())
        killed: str | None = None
        try:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await self._send(script)  # if the shell is gone, the readers see EOF
            waits: set[asyncio.Future[Any]] = {all_read, flood, exited}
            done, _ = await asyncio.wait(waits, timeout=wall,
                                         return_when=asyncio.FIRST_COMPLETED)
            if all_read not in done:
                if flood in done:
                    killed = "output"
                elif exited in done:
                    # The shell ended; a job it left in the background may hold the
                    # pipes: end everything, so that the readers reach the end.
                    await child.close()
                    await asyncio.wait({all_read}, timeout=_DRAIN_S)
                else:
                    killed = "wall_time"
        finally:
            flood.cancel()
            for reader in readers:
                reader.cancel()
            await asyncio.gather(all_read, flood, return_exceptions=True)
        duration_ms = (time.perf_counter() - started) * 1000
        status = (readers[0].result() if readers[0].done() and not readers[0].cancelled()
                  and readers[0].exception() is None else None)
        code: int | None = None
        # The kernel killed a process at the sandbox's memory cap during this
        # command (the shell itself, or the command's): say so, whatever the status.
        oom = child.oom_kills() > oom_before
        if killed is not None:
            await self._discard(f"was killed ({killed})")
        elif status is not None:
            code, killed = signal_death(_status(status), negative_is_signal=False)
        else:  # the shell exited (``exit``) or died, taking its sandbox along
            # Its pipes reached their end as it exited: let it report its own status
            # before what is left of the sandbox is killed (or the kill is its status).
            await asyncio.wait({exited}, timeout=_DRAIN_S)
            await child.close()
            returncode = child.proc.returncode if child.proc.returncode is not None else 1
            code, killed = signal_death(returncode,
                                        negative_is_signal=child.negative_is_signal)
            self._forget(f"exited with status {code}")
        if oom and killed is None:
            killed = "memory"
        stdout, stderr, truncated = capture.result()
        return ExecResult(exit_code=code, stdout=stdout, stderr=stderr,
                          truncated=truncated, timed_out=killed == "wall_time",
                          killed=killed, duration_ms=duration_ms)

    def _forget(self, why: str) -> None:
        self._child = self._out = self._err = None
        if self._exited is not None and not self._exited.done():
            self._exited.cancel()
        self._exited = None
        self._lost = why

    async def _discard(self, why: str) -> None:
        child = self._child
        if child is not None:
            self._forget(why)
            await child.close()

    async def close(self) -> None:
        """Kill the shell and everything it started; ``run`` then refuses."""
        self._closed = True
        child = self._child
        self._forget("was closed")
        if child is not None:
            await child.close()


def _status(tail: bytes) -> int:
    try:
        return int(tail.strip() or b"0")
    except ValueError:
        return 1


class ShellPool:
    """Persistent shells by key (the runtime uses agent and session). A shell unused
    for ``idle_s`` seconds is closed by :meth:`expire`, which :meth:`get` calls."""

    def __init__(self, *, idle_s: float = 900.0) -> None:
        self.idle_s = idle_s
        self._shells: dict[str, PersistentShell] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def __len__(self) -> int:
        return len(self._shells)

    def __contains__(self, key: object) -> bool:
        return key in self._shells

    async def get(self, key: str, factory: Callable[[], Awaitable[PersistentShell]], *,
                  tag: str | None = None, why: str = "") -> PersistentShell:
        """The shell for ``key``; made by ``factory`` when there is none (or it was
        closed), or when ``tag`` is given and the shell's is another: that one is
        closed (with what it left running), and the new one's first command says so,
        with ``why``. Concurrent calls for one key make one shell."""
        await self.expire()
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            shell = self._shells.get(key)
            replaced = (shell is not None and not shell.closed and tag is not None
                        and shell.tag != tag)
            if replaced and shell is not None:
                self._shells.pop(key, None)
                await shell.close()
            if shell is None or shell.closed:
                shell = await factory()
                self._shells[key] = shell
                if replaced:
                    shell.notice = (f"[agentd] the previous shell was closed{why}; this "
                                    "command ran in a new shell (working directory and "
                                    "variables were reset)\n")
            shell.last_used = time.monotonic()
            return shell

    async def expire(self) -> list[str]:
        """Close the shells idle for more than ``idle_s`` (not one running a
        command); return their keys."""
        now = time.monotonic()
        stale = [key for key, shell in self._shells.items()
                 if not shell.busy and now - shell.last_used > self.idle_s]
        for key in stale:
            await self.close(key)
        return stale

    async def close(self, key: str) -> None:
        shell = self._shells.pop(key, None)
        self._locks.pop(key, None)
        if shell is not None:
            await shell.close()

    async def close_all(self) -> None:
        for key in list(self._shells):
            await self.close(key)
