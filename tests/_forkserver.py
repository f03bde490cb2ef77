"""A fork server for the suite's daemon processes: ``agentd serve`` from a warm interpreter.

Starting ``python -m agentd serve`` costs about 1.2 s of CPU in imports (FastAPI's route
declarations, pydantic's models, the providers' SDKs) before the daemon does anything of
its own, and the suite starts well over a hundred. This process imports what a daemon
imports once, then forks a child per request that runs ``agentd``'s command line exactly
as ``python -m agentd ...`` would: its own argv, environment, working directory, log
file and ``sys.path``, a fresh random seed, and the interpreter's own exit (atexit
handlers, exit code, a traceback on an uncaught error). The child is a real process of
its own: signals, SIGKILL, its children and its open files are all its own.

Protocol (``tests.daemons.ForkServer`` is the other side): stdin is a ``SOCK_SEQPACKET``
socket. A request is a pickled ``(argv, env, cwd, log_path)``, answered with
``("pid", pid)``; when a child ends, ``("exit", pid, returncode)`` is sent, the code as
``subprocess.Popen.returncode`` gives it (negative: the signal that killed it). The
server ends when the socket closes. It has no threads, so forking it is safe.

Not for tests of the interpreter's own start-up (``python -m agentd`` with a broken
environment, say): those start a process the plain way.
"""

from __future__ import annotations

import os
import pickle
import random
import runpy
import selectors
import signal
import socket
import sys
import threading
from typing import Any


def _preload() -> None:
    """What a daemon imports by the time it serves (its CLI, app, runtime and the
    modules its runtime imports when it starts)."""
    import agentd.assembly.runtime
    import agentd.cli.app
    import agentd.memory.embed
    import agentd.security.commands  # (the policy imports it at its first decision)
    import agentd.server.app
    import agentd.server.daemon  # noqa: F401
    from agentd.tools import ToolRegistry

    ToolRegistry()  # (the built-in tools: agentd.tools imports them for a registry)


def _serve(control: socket.socket) -> tuple[Any, ...] | None:
    """Fork a child per request until the control socket closes: None here, the
    request in the child."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    children: set[int] = set()
    while True:
        for key, _ in selector.select():
            if key.fileobj is control:
                message = control.recv(1 << 20)
                if not message:
                    return None
                request = pickle.loads(message)
                pid = os.fork()
                if pid == 0:
                    selector.close()
                    control.close()
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    os.close(wake_r)
                    os.close(wake_w)
                    return tuple(request)
                children.add(pid)
                control.send(pickle.dumps(("pid", pid)))
            else:
                os.read(wake_r, 4096)
        for pid in list(children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                children.discard(pid)
                continue
            if done == pid:
                children.discard(pid)
                control.send(pickle.dumps(("exit", pid, os.waitstatus_to_exitcode(status))))


def _run_child(argv: list[str], env: dict[str, str], cwd: str, log_path: str,
               site_path: list[str]) -> None:
    """Become ``python -m agentd *argv`` (run from ``cwd``, printing to ``log_path``)."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    # As a new interpreter's: the working directory (``-m``), PYTHONPATH, then site's.
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [cwd, *extra, *[p for p in site_path if p not in extra]]
    random.seed()
    sys.argv = ["-m", *argv]
    runpy.run_module("agentd", run_name="__main__", alter_sys=True)


def main() -> None:
    control = socket.socket(fileno=os.dup(0))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    # This file's directory is not a daemon's: take it off the path before importing.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    pythonpath = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    site_path = [p for p in sys.path if p not in pythonpath]
    _preload()
    if threading.active_count() != 1:  # (forking a process with threads is not safe)
        raise SystemExit(f"the fork server has threads after its imports: "
                         f"{threading.enumerate()}")
    request = _serve(control)
    if request is not None:
        argv, env, cwd, log_path = request
        _run_child(argv, env, cwd, log_path, site_path)


if __name__ == "__main__":
    main()
