"""What every backend shares: limits and results, who the sandbox runs as, its
environment and working directory, and what the child does between fork and exec.

Who runs the sandbox: when the daemon is root, every sandboxed process runs as
``nobody`` (65534:65534, no supplementary groups). Three things depend on it: root is
exempt from ``RLIMIT_NPROC`` (a fork bomb would not be stopped), a root process could
signal or ptrace the daemon, and user namespaces created by root map real root into the
sandbox. When the daemon is not root, the sandbox keeps the daemon's uid; then
``RLIMIT_NPROC`` counts every process and thread of that user, the daemon's included.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import re
import resource
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from agentd.errors import InvalidInput, ToolError
from agentd.sandbox.workspace import Workspace

SANDBOX_UID = 65534
SANDBOX_GID = 65534
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
_PR_SET_PDEATHSIG = 1
_CLONE_NEWNS = 0x00020000
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What one sandboxed command (or one persistent shell) may use.

    Attributes:
        cpu_s: CPU seconds per process (``RLIMIT_CPU``; SIGXCPU at the limit).
        memory_mb: address space per process (``RLIMIT_AS``), in MiB.
        processes: processes and threads of the sandbox's uid (``RLIMIT_NPROC``).
        file_size_mb: the largest file a process may write (``RLIMIT_FSIZE``); also
            the size of the sandbox's private ``/tmp`` under bubblewrap.
        output_bytes: stdout and stderr kept together; the rest is dropped (the result
            says ``truncated``) and a command still writing after four times this
            much is killed.
        wall_s: wall-clock seconds; then every process of the sandbox is killed. A
            persistent shell applies it to each command.
    """

    cpu_s: float = 30.0
    memory_mb: int = 1024
    processes: int = 128
    file_size_mb: int = 256
    output_bytes: int = 256_000
    wall_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("cpu_s", "memory_mb", "processes", "file_size_mb", "output_bytes",
                     "wall_s"):
            value = getattr(self, name)
            if not value > 0 or math.isinf(value):
                raise InvalidInput(f"sandbox limit {name} must be a positive finite "
                                   f"number, not {value!r}", field=f"limits.{name}")


@dataclass(frozen=True, kw_only=True)
class ExecResult:
    """What a sandboxed command did.

    Attributes:
        exit_code: the exit status; ``128 + n`` for a death by signal ``n`` (the shell
            convention); None when we killed it (``killed`` says why).
        stdout: decoded as UTF-8, undecodable bytes replaced.
        stderr: likewise.
        truncated: output was dropped past ``Limits.output_bytes``.
        timed_out: the wall-clock limit was reached.
        killed: ``"wall_time"`` or ``"output"`` when we killed it; ``"cpu_time"``
            (SIGXCPU) or ``"file_size"`` (SIGXFSZ) when a limit did; ``"signal:NAME"``
            for another signal death the backend can tell apart; else None.
        duration_ms: from start to the end of its output.
    """

    exit_code: int | None
    stdout: str
    stderr: str
    truncated: bool
    timed_out: bool
    killed: str | None
    duration_ms: float


def sandbox_ids() -> tuple[int, int] | None:
    """The uid and gid sandboxed processes switch to, or None to keep the daemon's."""
    return (SANDBOX_UID, SANDBOX_GID) if os.geteuid() == 0 else None


def sandbox_env(home: str, env: Mapping[str, str] | None) -> dict[str, str]:
    """The whole environment of a sandboxed process: nothing of the daemon's."""
    out = {"PATH": SANDBOX_PATH, "HOME": home, "LANG": "C.UTF-8", "TERM": "dumb",
           "TMPDIR": "/tmp"}
    for key, value in (env or {}).items():
        if not isinstance(key, str) or not _ENV_NAME.match(key):
            raise InvalidInput(f"{key!r} is not a valid environment variable name",
                               field="env")
        if not isinstance(value, str) or "\x00" in value:
            raise InvalidInput(f"environment variable {key} must be a string without NUL "
                               "characters", field="env")
        out[key] = value
    return out


def cwd_parts(cwd: str) -> list[str]:
    """``cwd`` as components inside the workspace (absolute paths and ``..`` climbing
    out are refused with ``path_refused``)."""
    return Workspace.parts(cwd)


def open_cwd(workspace: Path, parts: list[str]) -> int:
    """A descriptor of the directory ``parts`` of ``workspace``, opened one component
    at a time without following links (so a link cannot lead the process out)."""
    fd = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for index, part in enumerate(parts):
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                where = "/".join(parts[:index + 1])
                raise ToolError(f"working directory {where!r}: {exc.strerror or exc}",
                                code="path_refused") from None
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_workspace(workspace: Path) -> None:
    if not workspace.is_dir():
        raise ToolError(f"workspace {workspace} does not exist", code="path_refused")


# -- between fork and exec ---------------------------------------------------------------


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def rlimits(limits: Limits) -> list[tuple[int, tuple[int, int]]]:
    """The rlimits of ``limits``. The CPU hard limit is one second above the soft one,
    so the process first gets SIGXCPU (which it cannot mistake for our SIGKILL)."""
    cpu = max(1, math.ceil(limits.cpu_s))
    mib = 1024 * 1024
    return [
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_AS, (limits.memory_mb * mib,) * 2),
        (resource.RLIMIT_FSIZE, (limits.file_size_mb * mib,) * 2),
        (resource.RLIMIT_NPROC, (limits.processes,) * 2),
        (resource.RLIMIT_CORE, (0, 0)),
    ]


def child_setup(limits: Limits | None, *, ids: tuple[int, int] | None,
                cwd_fd: int | None = None, bind: tuple[int, str] | None = None
                ) -> Callable[[], None]:
    """The ``preexec_fn`` of a sandboxed child, in this order:

    1. ``bind`` (root only): in a private mount namespace of its own, the directory
       open as descriptor ``bind[0]`` is bind-mounted on the path ``bind[1]``, so
       that bubblewrap, running as ``nobody``, reaches the workspace even when one of
       its parents (``/root``) is closed to other users. Nothing shows on the host.
    2. ``ids``: drop supplementary groups, then gid, then uid (all three ids).
    3. the death signal (after the uid change, which would clear it), and a check
       that the daemon did not die before it was armed;
    4. rlimits, and ``fchdir`` to ``cwd_fd``.

    Everything it calls is resolved before the fork.
    """
    limits_list = rlimits(limits) if limits is not None else [
        (resource.RLIMIT_CORE, (0, 0))]
    libc = _libc()
    prctl, unshare, mount = libc.prctl, libc.unshare, libc.mount
    parent = os.getpid()
    bind_args = None
    if bind is not None:
        bind_args = (f"/proc/self/fd/{bind[0]}".encode(), os.fsencode(bind[1]))
    setrlimit, fchdir, getppid, exit_ = (resource.setrlimit, os.fchdir, os.getppid,
                                         os._exit)
    setgroups, setresgid, setresuid = os.setgroups, os.setresgid, os.setresuid
    check = _check

    def setup() -> None:
        if bind_args is not None:
            check(unshare(_CLONE_NEWNS))
            check(mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None))
            check(mount(bind_args[0], bind_args[1], None, _MS_BIND, None))
        if ids is not None:
            setgroups([])
            setresgid(ids[1], ids[1], ids[1])
            setresuid(ids[0], ids[0], ids[0])
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if getppid() != parent:  # the daemon died before the death signal was armed
            exit_(111)
        for which, value in limits_list:
            setrlimit(which, value)
        if cwd_fd is not None:
            fchdir(cwd_fd)

    return setup


def spawn_kwargs(limits: Limits | None, *, drop: bool = True, cwd_fd: int | None = None,
                 bind: tuple[int, str] | None = None) -> dict[str, object]:
    """Keyword arguments for ``subprocess``/``asyncio`` process creation: a new
    session (its own process group, no controlling terminal) and :func:`child_setup`
    (with the uid switch when ``drop`` and the daemon is root)."""
    ids = sandbox_ids() if drop else None
    return {"start_new_session": True, "close_fds": True,
            "preexec_fn": child_setup(limits, ids=ids, cwd_fd=cwd_fd,
                                      bind=bind if ids is not None else None)}


def signal_death(status: int, *, negative_is_signal: bool) -> tuple[int, str | None]:
    """(exit_code, killed) for a wait status: ``-n`` from ``subprocess`` is a death
    by signal ``n``; through bubblewrap or a shell it shows as ``128 + n``, where only
    SIGXCPU and SIGXFSZ are told apart (137 may as well be ``exit 137``)."""
    if negative_is_signal and status < 0:
        sig = -status
        return 128 + sig, _signal_reason(sig, exact=True)
    if status > 128:
        return status, _signal_reason(status - 128, exact=False)
    return status, None


def _signal_reason(sig: int, *, exact: bool) -> str | None:
    if sig == signal.SIGXCPU:
        return "cpu_time"
    if sig == signal.SIGXFSZ:
        return "file_size"
    if not exact:
        return None
    try:
        return f"signal:{signal.Signals(sig).name}"
    except ValueError:
        return f"signal:{sig}"
