"""A pool of worker processes for work that must not run in the daemon's process.

Sync tools used to run in ``asyncio.to_thread``; that frees the event loop from I/O
waits, not from the GIL. One ``re`` search that backtracks, or one power of a big
integer, is a single C call that holds the GIL until it ends: ``/health`` and every
other agent stopped for as long as it ran, and the tool timeout could not stop it (a
thread cannot be killed). Here such work runs in a separate interpreter
(:mod:`agentd.tools._worker`) that the daemon kills at the call's time limit:

- workers start lazily and are reused. A zygote forks them: a fresh interpreter
  (``python -m``, no fork of the threaded daemon) that imported the tools once, so a
  worker starts in milliseconds and a killed one is replaced at once;
- at most ``size`` run at once, and at most ``per_owner`` for one agent, so that an
  agent filling its share with hostile calls leaves workers to the others; further
  calls wait (the wait counts against the call's time limit);
- a call that is cancelled or times out kills its worker (the next call starts a new
  one); a worker that dies answers ``tool_crashed``;
- each worker has an address-space limit (``RLIMIT_AS``) and runs at a lower CPU
  priority than the daemon; replies are capped (:data:`~agentd.tools._worker.MAX_REPLY`).

The pool belongs to the runtime, which closes it at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import socket
import sys
from collections.abc import Coroutine
from typing import Any

from agentd.errors import ToolError
from agentd.tools._worker import HEADER, MAX_REPLY, PRELOADABLE

__all__ = ["WorkerPool"]

log = logging.getLogger(__name__)


class _Zygote:
    """The process that forks workers (see :func:`agentd.tools._worker.main`)."""

    def __init__(self, proc: asyncio.subprocess.Process, control: socket.socket) -> None:
        self.proc = proc
        self.control = control
        self._lock = asyncio.Lock()
        #: Modules imported on request since the start (:meth:`preload`).
        self.preloaded: set[str] = set()

    @classmethod
    async def start(cls, memory_mb: int) -> _Zygote:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "agentd.tools._worker", str(memory_mb << 20),
                str(os.getpid()), stdin=theirs.fileno())
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        zygote = cls(proc, ours)
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_sendall(ours, pickle.dumps(list(sys.path)))
            if await loop.sock_recv(ours, 16) != b"ready":
                raise ToolError("the tool worker process did not start",
                                code="tool_crashed")
        except BaseException:
            zygote.stop()
            raise
        return zygote

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None and self.control.fileno() >= 0

    async def fork(self) -> _Worker:
        loop = asyncio.get_running_loop()
        async with self._lock:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                socket.send_fds(self.control, [b"F"], [theirs.fileno()])
            finally:
                theirs.close()
            try:
                answer = await loop.sock_recv(self.control, HEADER.size)
            except BaseException:
                # A pid left unread would answer the next fork: start afresh.
                ours.close()
                self.stop()
                raise
        if len(answer) != HEADER.size:
            ours.close()
            self.stop()
            raise ToolError("the tool worker process died", code="tool_crashed")
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        return _Worker(self, HEADER.unpack(answer)[0], reader, writer)

    async def preload(self, module: str) -> None:
        """Have the zygote import ``module`` (one of ``_worker.PRELOADABLE``) for the
        workers it forks from now on."""
        if module not in PRELOADABLE:
            raise ValueError(f"the tool workers do not preload {module!r}")
        loop = asyncio.get_running_loop()
        async with self._lock:
            self.control.send(b"I" + module.encode())
            try:
                answer = await loop.sock_recv(self.control, 16)
            except BaseException:
                self.stop()  # (an answer left unread would answer the next fork)
                raise
        if answer != b"imported":
            self.stop()
            raise ToolError("the tool worker process died", code="tool_crashed")
        self.preloaded.add(module)

    def kill(self, pid: int) -> None:
        with contextlib.suppress(OSError):
            self.control.send(b"K" + HEADER.pack(pid))

    def stop(self) -> None:
        self.control.close()  # the zygote exits at end of input; its workers die with it
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()


class _Worker:
    def __init__(self, zygote: _Zygote, pid: int, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.zygote = zygote
        self.pid = pid
        self.reader = reader
        self.writer = writer

    async def send(self, payload: bytes) -> None:
        self.writer.write(HEADER.pack(len(payload)) + payload)
        await self.writer.drain()

    async def receive(self) -> bytes:
        size = HEADER.unpack(await self.reader.readexactly(HEADER.size))[0]
        if size > MAX_REPLY + 4096:
            raise ToolError("a tool worker sent an oversized reply", code="tool_crashed")
        return await self.reader.readexactly(size)

    def kill(self) -> None:
        self.zygote.kill(self.pid)
        self.writer.close()


class WorkerPool:
    """Worker processes for CPU-bound tool work, each call with a hard time limit.

    Args:
        size: how many workers may run at once.
        per_owner: how many of them one owner (an agent) may use at once.
        memory_mb: each worker's address-space limit (0: none).
    """

    #: Idle workers kept for the next calls (more are stopped when they finish).
    KEEP = 4

    def __init__(self, *, size: int = 8, per_owner: int = 2, memory_mb: int = 1024) -> None:
        self.size = size
        self.per_owner = min(per_owner, size)
        self.memory_mb = memory_mb
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._zygote: _Zygote | None = None
        self._zygote_lock = asyncio.Lock()
        self._slots: asyncio.Semaphore | None = None
        self._owners: dict[str, tuple[asyncio.Semaphore, int]] = {}
        self._reaping: set[asyncio.Task[Any]] = set()
        self._closed = False
        #: Workers started so far (a test and the benchmark read it).
        self.started = 0

    async def run(self, module: str, function: str, *args: Any, owner: str = "") -> Any:
        """``module.function(*args)`` in a worker; its return value.

        A :class:`~agentd.errors.ToolError` raised there is raised here with its code;
        any other failure becomes ``tool_failed``. Cancel the caller (``asyncio.timeout``)
        to stop the call: its worker is killed. ``owner`` (an agent) gets at most
        ``per_owner`` workers at once.
        """
        if self._closed:
            raise ToolError("the daemon is shutting down", code="tool_unavailable",
                            retryable=True)
        payload = pickle.dumps((module, function, args), protocol=pickle.HIGHEST_PROTOCOL)
        share, users = self._owners.get(owner) or (asyncio.Semaphore(self.per_owner), 0)
        self._owners[owner] = (share, users + 1)
        try:
            async with share:
                return await self._run(function, payload)
        finally:
            share, users = self._owners[owner]
            if users > 1:
                self._owners[owner] = (share, users - 1)
            else:
                del self._owners[owner]

    async def _run(self, function: str, payload: bytes) -> Any:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.size)
        async with self._slots:
            worker = self._idle.pop() if self._idle else await self._start()
            self._busy.add(worker)
            done = False
            try:
                await worker.send(payload)
                reply = pickle.loads(await worker.receive())
                done = True
            except (asyncio.IncompleteReadError, ConnectionError):
                raise ToolError("the tool worker died", code="tool_crashed") from None
            finally:
                self._busy.discard(worker)
                if done and not self._closed and len(self._idle) < self.KEEP:
                    self._idle.append(worker)
                else:
                    self._discard(worker)
        kind = reply[0]
        if kind == "ok":
            return reply[1]
        if kind == "error":
            raise ToolError(reply[2], code=reply[1])
        log.warning("a tool worker's %s raised %s", function, reply[1])
        raise ToolError(f"{function} failed: {reply[1]}: {reply[2]}", code="tool_failed")

    async def ready(self, *modules: str) -> None:
        """Start the zygote unless it runs: a fresh interpreter importing the tools,
        a start-up cost of the pool (seconds on a loaded machine) that a caller timing
        its own work takes out of that time by awaiting this first. ``modules`` (of
        ``agentd.tools._worker.PRELOADABLE``): imported there too, once, for every
        worker from then on (the idle ones, forked without them, are let go)."""
        zygote = await self._zygote_running()
        for module in modules:
            if module not in zygote.preloaded:
                await zygote.preload(module)
                idle, self._idle = self._idle, []
                for worker in idle:
                    self._discard(worker)

    async def _zygote_running(self) -> _Zygote:
        async with self._zygote_lock:
            if self._zygote is None or not self._zygote.alive:
                if self._zygote is not None:
                    self._stop(self._zygote)
                self._zygote = await _Zygote.start(self.memory_mb)
            return self._zygote

    async def _start(self) -> _Worker:
        zygote = await self._zygote_running()
        try:
            worker = await zygote.fork()
        except OSError as exc:
            self._stop(zygote)
            raise ToolError(f"could not start a tool worker: {exc}",
                            code="tool_crashed") from None
        self.started += 1
        return worker

    def _stop(self, zygote: _Zygote) -> None:
        zygote.stop()
        if self._zygote is zygote:
            self._zygote = None
        self._reap(zygote.proc.wait())

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        self._reap(worker.writer.wait_closed())

    def _reap(self, waiting: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(waiting)
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    async def close(self) -> None:
        """Stop every worker (a call still running gets ``tool_crashed``)."""
        self._closed = True
        idle, self._idle = self._idle, []
        for worker in [*idle, *self._busy]:
            self._discard(worker)
        if self._zygote is not None:
            self._stop(self._zygote)
        if self._reaping:
            await asyncio.gather(*self._reaping, return_exceptions=True)
