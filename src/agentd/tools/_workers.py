"""A pool of worker processes for work that must not run in the daemon's process.

Sync tools used to run in ``asyncio.to_thread``; that frees the event loop from I/O
waits, not from the GIL. One ``re`` search that backtracks, or one power of a big
integer, is a single C call that holds the GIL until it ends: ``/health`` and every
other agent stopped for as long as it ran, and the tool timeout could not stop it (a
thread cannot be killed). Here such work runs in a separate interpreter
(:mod:`agentd.tools._worker`) that the daemon kills at the call's time limit:

- workers start lazily, as fresh interpreters (``python -m``, no fork of the threaded
  daemon), and are reused; at most ``size`` run at once, further calls wait (the wait
  counts against the call's time limit);
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
import pickle
import sys
from typing import Any

from agentd.errors import ToolError
from agentd.tools._worker import HEADER, MAX_REPLY

__all__ = ["WorkerPool"]

log = logging.getLogger(__name__)


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def send(self, payload: bytes) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write(HEADER.pack(len(payload)) + payload)
        await stdin.drain()

    async def receive(self) -> bytes:
        stdout = self.proc.stdout
        assert stdout is not None
        size = HEADER.unpack(await stdout.readexactly(HEADER.size))[0]
        if size > MAX_REPLY + 4096:
            raise ToolError("a tool worker sent an oversized reply", code="tool_crashed")
        return await stdout.readexactly(size)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()


class WorkerPool:
    """Worker processes for CPU-bound tool work, each call with a hard time limit.

    Args:
        size: how many workers may run at once.
        memory_mb: each worker's address-space limit (0: none).
    """

    def __init__(self, *, size: int = 4, memory_mb: int = 1024) -> None:
        self.size = size
        self.memory_mb = memory_mb
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._slots: asyncio.Semaphore | None = None
        self._reaping: set[asyncio.Task[Any]] = set()
        self._closed = False
        #: Workers started so far (a test and the benchmark read it).
        self.started = 0

    async def run(self, module: str, function: str, *args: Any) -> Any:
        """``module.function(*args)`` in a worker; its return value.

        A :class:`~agentd.errors.ToolError` raised there is raised here with its code;
        any other failure becomes ``tool_failed``. Cancel the caller (``asyncio.timeout``)
        to stop the call: its worker is killed.
        """
        if self._closed:
            raise ToolError("the daemon is shutting down", code="tool_unavailable",
                            retryable=True)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.size)
        payload = pickle.dumps((module, function, args), protocol=pickle.HIGHEST_PROTOCOL)
        async with self._slots:
            worker = self._idle.pop() if self._idle else await self._start()
            self._busy.add(worker)
            done = False
            try:
                await worker.send(payload)
                reply = pickle.loads(await worker.receive())
                done = True
            except (asyncio.IncompleteReadError, ConnectionError):
                raise ToolError(f"the tool worker died ({self._exit(worker)})",
                                code="tool_crashed") from None
            finally:
                self._busy.discard(worker)
                if done and not self._closed:
                    self._idle.append(worker)
                else:
                    self._discard(worker)
        kind = reply[0]
        if kind == "ok":
            return reply[1]
        if kind == "error":
            raise ToolError(reply[2], code=reply[1])
        raise ToolError(f"{function} failed: {reply[1]}: {reply[2]}", code="tool_failed")

    async def _start(self) -> _Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agentd.tools._worker", str(self.memory_mb << 20),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        worker = _Worker(proc)
        self.started += 1
        try:
            await worker.send(pickle.dumps(list(sys.path)))
            if await worker.receive() != b"ready":
                raise ToolError("a tool worker did not start", code="tool_crashed")
        except (asyncio.IncompleteReadError, ConnectionError):
            self._discard(worker)
            raise ToolError(f"a tool worker did not start ({self._exit(worker)})",
                            code="tool_crashed") from None
        except BaseException:
            self._discard(worker)
            raise
        return worker

    @staticmethod
    def _exit(worker: _Worker) -> str:
        code = worker.proc.returncode
        return "still running" if code is None else f"exit status {code}"

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        task = asyncio.get_running_loop().create_task(worker.proc.wait())
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    async def close(self) -> None:
        """Stop every worker (a call still running gets ``tool_crashed``)."""
        self._closed = True
        idle, self._idle = self._idle, []
        for worker in [*idle, *self._busy]:
            self._discard(worker)
        if self._reaping:
            await asyncio.gather(*self._reaping, return_exceptions=True)
