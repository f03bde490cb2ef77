"""The worker processes: CPU-bound tool work, out of the daemon's process.

A regular expression that backtracks for minutes, or a big-integer power, holds the GIL
of the process it runs in. Here that is a worker, which the daemon kills at the call's
time limit, so the daemon's event loop never waits on it.

:class:`agentd.tools.workers.WorkerPool` starts one zygote as a fresh interpreter
(``python -m agentd.tools._worker MEMORY_BYTES DAEMON_PID``: never a fork of the
threaded daemon), which imports the tools once and forks the workers (:func:`main`).
Each worker talks to the daemon on its own socket: a frame is an 8-byte big-endian
length and a pickle.
The daemon sends ``(module, function, args)`` naming a function of its own code (never
anything the model chose); the worker answers ``("ok", value)``, ``("error", code,
message)`` for a :class:`~agentd.errors.ToolError`, or ``("failed", type name,
message)`` for anything else.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import pickle
import resource
import signal
import socket
import struct
import sys
from typing import Any

__all__ = ["HEADER", "MAX_REPLY", "PRELOADABLE", "PRELOADED", "decide", "main", "run_tool"]

HEADER = struct.Struct(">Q")
#: What the zygote imports before it forks a worker: the policy (``decide``) and the
#: modules of the built-in tools marked ``isolated`` (tests/tools/test_worker_pool.py
#: checks that the list names every one).
PRELOADED = ("agentd.security.commands", "agentd.security.policy", "agentd.tools.builtins",
             "agentd.tools.files")
#: What the daemon may ask the zygote to import for the workers it forks next (``I``).
PRELOADABLE = frozenset({"bashlex"})
#: A reply bigger than this is refused (tool outputs are cut at 64 KiB anyway).
MAX_REPLY = 4 * 1024 * 1024


def run_tool(module: str, name: str, arguments: dict[str, Any], ctx: Any,
             quota: tuple[int, int] | None = None
             ) -> tuple[Any, str | None, tuple[int, int] | None]:
    """Validate and run the tool named ``name`` defined in ``module``; (its result,
    what it flagged untrusted, the workspace's quota use after it). ``quota``: the
    workspace's (bytes used, quota) as the daemon knows it: the file tools' writes
    count against it here, and the daemon takes the new figure back."""
    from agentd.sandbox.workspace import set_usage, usage
    from agentd.tools.base import Tool

    workspace = getattr(ctx, "workspace", None)
    if workspace is not None:
        set_usage(workspace, *(quota or (0, None)))
    found = next((value for value in vars(importlib.import_module(module)).values()
                  if isinstance(value, Tool) and value.name == name), None)
    if found is None:
        raise TypeError(f"{module} defines no tool {name!r}")
    kwargs = found.validate(arguments)
    if ctx is not None:
        kwargs["ctx"] = ctx
    result = found.fn(**kwargs)
    return (result, None if ctx is None else ctx.untrusted,
            usage(workspace) if workspace is not None else None)


def decide(policy: Any, facts: Any, arguments: dict[str, Any], tainted: bool,
           confined: bool = False) -> Any:
    """The policy's verdict on a call (the command analyser parses attacker text)."""
    return policy.decide(facts, arguments, tainted=tainted, confined=confined)


def _read(fd: int, size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _write(fd: int, payload: bytes) -> None:
    view = memoryview(HEADER.pack(len(payload)) + payload)
    while view:
        view = view[os.write(fd, view):]


def _answer(request: tuple[str, str, tuple[Any, ...]]) -> tuple[Any, ...]:
    from agentd.errors import ToolError

    module, function, args = request
    try:
        value = getattr(importlib.import_module(module), function)(*args)
    except ToolError as exc:
        return ("error", exc.code, exc.message)
    except MemoryError:
        return ("error", "tool_out_of_memory",
                "the call needed more memory than a tool worker may use")
    except RecursionError:
        return ("error", "tool_bad_arguments", "the input is nested too deeply")
    except Exception as exc:
        return ("failed", type(exc).__name__, str(exc)[:2000])
    return ("ok", value)


def _encode(reply: tuple[Any, ...]) -> bytes:
    try:
        payload = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        payload = pickle.dumps(("failed", type(exc).__name__, "result cannot be sent"))
    if len(payload) > MAX_REPLY:
        payload = pickle.dumps(("error", "tool_output_too_big",
                                f"the result is {len(payload)} bytes; the limit is "
                                f"{MAX_REPLY}"))
    return payload


def _die_with_parent() -> None:
    # A worker spinning on a hostile regex must not outlive the daemon.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _serve(chan: int, memory_bytes: int) -> None:
    """One worker (a child of the zygote): answer requests on ``chan`` until EOF."""
    _die_with_parent()
    if memory_bytes > 0:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    # The event loop comes first when both want a core.
    with contextlib.suppress(OSError):
        os.nice(5)
    while True:
        header = _read(chan, HEADER.size)
        if header is None:
            return
        body = _read(chan, HEADER.unpack(header)[0])
        if body is None:
            return
        _write(chan, _encode(_answer(pickle.loads(body))))


def main() -> None:
    """The zygote: imports the tools once, then forks a worker per request.

    Its stdin is a ``SOCK_SEQPACKET`` control socket. The daemon sends ``sys.path``
    (answered ``ready``), then ``F`` with a socket to give the new worker (answered
    with its pid), ``I`` and a module of :data:`PRELOADABLE` to import for the workers
    it forks from then on (answered ``imported``), or ``K`` and a pid to kill and reap
    one of its workers. Forking a
    ready interpreter takes milliseconds, where starting one takes a second: a worker
    killed at a time limit is replaced at once. The zygote has no threads, so forking
    it is safe.
    """
    control = socket.socket(fileno=os.dup(0))
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(2, 1)  # what a tool prints goes to the daemon's stderr, not a channel
    os.close(null)
    _die_with_parent()
    # The daemon gone before the death signal was armed: nothing to serve. (Its pid,
    # not "reparented to 1": in a container the daemon may be pid 1 itself.)
    if len(sys.argv) > 2 and os.getppid() != int(sys.argv[2]):
        return
    memory_bytes = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    paths = control.recv(1 << 20)
    if not paths:
        return
    sys.path[:] = pickle.loads(paths)
    # What the workers run is imported once, here, and shared by every worker: the
    # modules of the built-in isolated tools and the policy with its command analyser
    # (``decide``). Not the other tools: they run in the daemon (a worker imports a
    # deployment's own isolated tool's module when it first runs it). What only some
    # daemons need (bashlex, which builds its parser tables whenever it is imported:
    # about 0.15 s, for judging shell commands) comes with ``I``.
    for module in PRELOADED:
        importlib.import_module(module)

    control.send(b"ready")
    children: set[int] = set()
    while True:
        message, fds, _, _ = socket.recv_fds(control, 64, 1)
        if not message:
            return
        if message == b"F" and fds:
            pid = os.fork()
            if pid == 0:
                control.close()
                try:
                    _serve(fds[0], memory_bytes)
                finally:
                    os._exit(0)
            os.close(fds[0])
            children.add(pid)
            control.send(HEADER.pack(pid))
        elif message[:1] == b"I":
            module = message[1:].decode(errors="replace")
            if module in PRELOADABLE:
                importlib.import_module(module)
            control.send(b"imported" if module in PRELOADABLE else b"refused")
        elif message[:1] == b"K" and len(message) == 1 + HEADER.size:
            pid = HEADER.unpack(message[1:])[0]
            if pid in children:  # an unreaped child: its pid cannot have been reused
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)  # a killed process ends at once
                children.discard(pid)
        for fd in fds[1:] if message == b"F" else fds:
            os.close(fd)
        for pid in list(children):  # reap the workers that ended
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    children.discard(pid)


if __name__ == "__main__":
    main()
