"""What every backend shares: limits and results, who the sandbox runs as, its
environment and working directory, and what the child does between fork and exec.

Who runs the sandbox: when the daemon is root, each agent's sandboxed processes run
as that agent's own uid and gid (taken from ``[sandbox] uid_base``/``uid_count``, no
supplementary groups; see ``agentd.runtime.sandboxes``), and a sandbox started
without one (a test, a probe) as ``nobody`` (65534). Three things depend on not being
root: root is exempt from ``RLIMIT_NPROC`` (a fork bomb would not be stopped), a root
process could signal or ptrace the daemon, and user namespaces created by root map
real root into the sandbox. A uid of its own per agent means one agent cannot use up
another's process count, read its workspace (``0700``) or signal its processes.

When the daemon is not root, none of this is possible: the sandbox keeps the daemon's
uid, ``RLIMIT_NPROC`` counts every process and thread of that user (the daemon's and
every agent's together) and agents share one uid.

Memory and processes are also capped per sandbox by a cgroup where one can be made
(``_cgroups``); the rlimits here apply in any case (``RLIMIT_AS`` per process,
``RLIMIT_NPROC`` per uid).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import math
import os
import re
import resource
import signal
import stat
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentd.errors import InvalidInput, ToolError
from agentd.sandbox import hostfs as _hostfs
from agentd.sandbox._netns import CLONE_NEWNET, loopback_up
from agentd.sandbox.workspace import Workspace

__all__ = ["DENIED_SYSCALLS", "SANDBOX_GID", "SANDBOX_PATH", "SANDBOX_UID", "ExecResult",
           "Limits", "Reach", "Sealed", "child_setup", "closed_parent", "cwd_parts",
           "open_cwd", "reach", "reinstate", "retire", "retired", "rlimits", "sandbox_env",
           "sandbox_ids", "seccomp_filter", "signal_death", "spawn_kwargs", "started",
           "starting", "workspace_owner"]

SANDBOX_UID = 65534
SANDBOX_GID = 65534
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What one sandboxed command (or one persistent shell) may use.

    Attributes:
        cpu_s: CPU seconds per process (``RLIMIT_CPU``; SIGXCPU at the limit).
        memory_mb: memory of the whole sandbox (its cgroup, swap included), in
            MiB; also the address space of each process (``RLIMIT_AS``), which is
            all there is where no cgroup can be made.
        processes: processes and threads of the whole sandbox (its cgroup), and of
            the sandbox's uid (``RLIMIT_NPROC``: under root one uid per agent, so
            counted over that agent's sandboxes running at the time).
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
            (SIGXCPU) or ``"file_size"`` (SIGXFSZ) when a limit did; ``"memory"``
            when the kernel killed a process of it at the sandbox's memory cap
            (its cgroup); ``"signal:NAME"``
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


#: Uids being reclaimed (their agent was deleted): no process starts as one of them in
#: this daemon until it is given to an agent again (``agentd.runtime.sandboxes``).
#: Checked by :func:`sandbox_ids` and again in the child at the fork, so that a
#: sandbox of the old agent started meanwhile cannot outlive the reclaiming sweep.
_RETIRED: set[int] = set()


def retire(uids: Iterable[int]) -> None:
    """No process of this daemon starts as any of ``uids`` from now on."""
    _RETIRED.update(uids)


def reinstate(uids: Iterable[int]) -> None:
    """``uids`` were given to agents again: processes may start as them."""
    _RETIRED.difference_update(uids)


def retired(uid: int) -> bool:
    return uid in _RETIRED


_STARTING: dict[int, int] = {}


@contextlib.contextmanager
def starting(user: tuple[int, int] | None) -> Iterator[tuple[int, int] | None]:
    """Around starting something as ``user`` that does not fork through
    :func:`child_setup` (a browser, started by Playwright): refused while the uid is
    being reclaimed (:func:`sandbox_ids`), and counted meanwhile, so that a sweep of
    the uid waits for it (:func:`launching`) rather than miss it. Yields the ids."""
    ids = sandbox_ids(user)
    if ids is None:
        yield None
        return
    _STARTING[ids[0]] = _STARTING.get(ids[0], 0) + 1
    try:
        yield ids
    finally:
        left = _STARTING[ids[0]] - 1
        if left:
            _STARTING[ids[0]] = left
        else:
            del _STARTING[ids[0]]
            waiters, _WAITERS[:] = list(_WAITERS), []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)


_WAITERS: list[asyncio.Future[None]] = []


async def started(uids: Iterable[int]) -> None:
    """Once nothing is being started as one of ``uids`` (see :func:`starting`)."""
    chosen = set(uids)
    while any(uid in _STARTING for uid in chosen):
        waiter = asyncio.get_running_loop().create_future()
        _WAITERS.append(waiter)
        await waiter


def sandbox_ids(user: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """The uid and gid sandboxed processes switch to: ``user`` (an agent's own), or
    ``nobody`` without one; None (keep the daemon's) when the daemon is not root.

    Raises:
        ToolError: ``sandbox_unavailable``, ``user``'s uid is being reclaimed (its
            agent was deleted).
    """
    if os.geteuid() != 0:
        return None
    if user is not None and user[0] in _RETIRED:
        raise ToolError("this agent's sandbox uid is being reclaimed: the agent was "
                        "deleted", code="sandbox_unavailable")
    return user if user is not None else (SANDBOX_UID, SANDBOX_GID)


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


def workspace_owner(workspace: Path) -> int:
    """The uid owning the workspace (a ToolError when it is not a directory)."""
    try:
        info = os.stat(workspace)
    except OSError as exc:
        raise ToolError(f"workspace {workspace}: {exc.strerror or exc}",
                        code="path_refused") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ToolError(f"workspace {workspace} is not a directory", code="path_refused")
    return info.st_uid


@dataclass(frozen=True, slots=True)
class Reach:
    """How a sandbox's uid reaches its workspace's path when a parent (``/root``)
    is closed to it: in a private mount namespace, an empty ``tmpfs`` covers
    ``cover`` (the first closed parent), the directories down to the workspace are
    made in it, and the workspace (opened first, in the new namespace: a mount of
    another namespace cannot be bound) is bind-mounted at its own path. The command
    sees the workspace where it is on the host, so an absolute path to it works (git
    changes to one), and nothing else of the closed parent: the rest of it is hidden
    behind the ``tmpfs``. Its working directory is ``cwd`` under the new mount,
    opened one component at a time without following links."""

    cover: str
    steps: tuple[str, ...]  # the directories to make under cover, the workspace last
    cwd: tuple[str, ...] = ()  # the working directory's components in the workspace


@dataclass(frozen=True, slots=True)
class Sealed:
    """The process backend's filesystem under root (:mod:`agentd.sandbox.hostfs`):
    the host read-only, private ``/tmp``, ``/var/tmp`` and ``/dev/shm``, the
    ``workspace`` (a real path) writable at its own path, ``cwd`` its components of the
    working directory. Nothing the command writes outlives it but in its workspace,
    so its uid can be given to another agent once the agent is gone."""

    seal: _hostfs.Seal
    workspace: str
    cwd: tuple[str, ...] = ()


def closed_parent(workspace: Path, ids: tuple[int, int]) -> Path | None:
    """The first parent of ``workspace`` (from ``/`` down) that ``ids`` (uid, gid,
    no supplementary groups) may not pass through, or None when every one is open."""
    uid, gid = ids
    for parent in reversed(workspace.parents):
        try:
            info = os.stat(parent)
        except OSError:
            return parent
        if info.st_uid == uid:
            bit = stat.S_IXUSR
        elif info.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return parent
    return None


def reach(workspace: Path, cover: Path, cwd: Sequence[str] = ()) -> Reach:
    """The `Reach` that shows ``workspace`` (a real path) through ``cover``."""
    steps = [str(Path(*workspace.parts[:i + 1]))
             for i in range(len(cover.parts), len(workspace.parts))]
    return Reach(cover=str(cover), steps=tuple(steps), cwd=tuple(cwd))


# -- seccomp: the kernel interfaces most used to escape, refused -----------------------

#: Syscalls refused (ENOSYS, as if the kernel had none, so programs fall back): the
#: key rings, eBPF, perf events, userfaultfd and io_uring, a large share of the
#: kernel bugs used to escape containers, and nothing a build or a test needs.
DENIED_SYSCALLS = ("add_key", "request_key", "keyctl", "bpf", "perf_event_open",
                   "userfaultfd", "io_uring_setup", "io_uring_enter",
                   "io_uring_register")
_SYSCALLS = {  # (audit arch, numbers)
    "x86_64": (0xC000003E, {"add_key": 248, "request_key": 249, "keyctl": 250,
                            "perf_event_open": 298, "bpf": 321, "userfaultfd": 323,
                            "io_uring_setup": 425, "io_uring_enter": 426,
                            "io_uring_register": 427}),
    "aarch64": (0xC00000B7, {"add_key": 217, "request_key": 218, "keyctl": 219,
                             "perf_event_open": 241, "bpf": 280, "userfaultfd": 282,
                             "io_uring_setup": 425, "io_uring_enter": 426,
                             "io_uring_register": 427}),
}
_ENOSYS = 0x00050000 | 38  # SECCOMP_RET_ERRNO | ENOSYS
_ALLOW = 0x7FFF0000


def seccomp_filter(machine: str | None = None) -> bytes | None:
    """A classic-BPF seccomp program (None on an architecture not listed: no
    filter). Another architecture's syscalls (32-bit, x32) get ENOSYS as a whole:
    their numbers differ and would slip through."""
    arch, numbers = _SYSCALLS.get(machine or os.uname().machine, (None, {}))
    if arch is None:
        return None
    ld, jeq, jset, ret = 0x20, 0x15, 0x45, 0x06
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, _ENOSYS), (ld, 0, 0, 0)]
    if arch == 0xC000003E:
        prog += [(jset, 0, 1, 0x40000000), (ret, 0, 0, _ENOSYS)]  # x32 numbers
    for name in DENIED_SYSCALLS:
        prog += [(jeq, 0, 1, numbers[name]), (ret, 0, 0, _ENOSYS)]
    prog.append((ret, 0, 0, _ALLOW))
    return b"".join(struct.pack("=HBBI", *op) for op in prog)


# -- between fork and exec ---------------------------------------------------------------


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                           ctypes.c_ulong]
    libc.unshare.argtypes = [ctypes.c_int]
    libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                           ctypes.c_ulong, ctypes.c_void_p]
    return libc


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
                cwd_fd: int | None = None, bind: tuple[str, str] | None = None,
                death: int = signal.SIGKILL, no_new_privs: bool = False,
                cgroup_fds: Sequence[int] = (), new_net: bool = False,
                netns: int | None = None, reach: Reach | None = None,
                shown: tuple[str, Sequence[tuple[int, str]]] | None = None,
                sealed: Sealed | None = None) -> Callable[[], None]:
    """The ``preexec_fn`` of a sandboxed child, in this order:

    0. ``netns`` (root): join that network namespace (one the daemon made, see
       ``_netns``); else ``new_net``: a network namespace of its own with only
       ``lo`` (up): as root before the uid drops, else inside a new user namespace
       (which owns it).

    1. ``bind`` (root only): in a private mount namespace of its own, the directory
       ``bind[0]`` (the workspace) is bind-mounted on the path ``bind[1]``, so
       that bubblewrap, running as ``nobody``, reaches the workspace even when one of
       its parents (``/root``) is closed to other users. Nothing shows on the host.
       ``reach`` (root only, the process backend): the same need met at the
       workspace's own path (see `Reach`); ``sealed`` (root only, the process
       backend, in place of ``reach``): that and the host made read-only, with
       private tmp directories (`Sealed`).
       ``shown`` (root only, with ``bind``): ``(cover, [(fd, name), ...])``: a small
       tmpfs on the directory ``cover`` and, in it, the folder open as ``fd``
       bind-mounted on ``cover/name`` (read-only folders bubblewrap then binds into
       the sandbox, such as skills under a home closed to the sandbox's uid).
    2. ``cgroup_fds`` (the sandbox cgroup's ``cgroup.procs``, opened by the daemon):
       ``0`` written to each moves the child in, while it is still the daemon's uid;
       everything it starts stays in.
    3. ``ids``: drop supplementary groups, then gid, then uid (all three ids).
    4. the death signal ``death`` (after the uid change, which would clear it), and
       a check that the daemon did not die before it was armed;
    5. rlimits, ``fchdir`` to ``cwd_fd``, and with ``no_new_privs`` (for the process
       backend, whose commands see the host's ``su`` and ``sudo``) set-uid programs
       no longer raise privileges and the :func:`seccomp_filter` is installed
       (bubblewrap installs it itself).

    Everything it calls is resolved before the fork.
    """
    limits_list = rlimits(limits) if limits is not None else [
        (resource.RLIMIT_CORE, (0, 0))]
    libc = _libc()
    prctl, unshare, mount = libc.prctl, libc.unshare, libc.mount
    parent = os.getpid()
    bind_args = None
    if bind is not None:
        bind_args = (os.fsencode(bind[0]), os.fsencode(bind[1]))
    shown_args = None
    if shown is not None and bind is not None:
        # A mount of another namespace cannot be bound from its descriptor: the
        # folder is opened again by its real path in the child's namespace, and must
        # be the very directory of the descriptor (device and inode), else the child
        # fails.
        entries = []
        for fd, name in shown[1]:
            info = os.fstat(fd)
            entries.append((os.fsencode(os.readlink(f"/proc/self/fd/{fd}")),
                            (info.st_dev, info.st_ino), os.fsencode(f"{shown[0]}/{name}")))
        shown_args = (os.fsencode(shown[0]), entries)
    fstat = os.fstat
    reach_args = None
    if reach is not None:
        reach_args = (os.fsencode(reach.cover), [os.fsencode(p) for p in reach.steps],
                      [os.fsencode(p) for p in reach.cwd])
    sealed_args = None
    if sealed is not None:
        sealed_args = (sealed.seal, os.fsencode(sealed.workspace),
                       [os.fsencode(p) for p in sealed.cwd])
    seal_apply = _hostfs.apply
    gone = _RETIRED  # (read in the child: as it was at the fork)
    mkdir, open_, close = os.mkdir, os.open, os.close
    setrlimit, fchdir, getppid, exit_, write = (resource.setrlimit, os.fchdir,
                                                os.getppid, os._exit, os.write)
    join = tuple(cgroup_fds)
    setgroups, setresgid, setresuid = os.setgroups, os.setresgid, os.setresuid
    check = _check
    death_signal = int(death)
    net_flags = CLONE_NEWNET if os.geteuid() == 0 else _CLONE_NEWUSER | CLONE_NEWNET
    setns = libc.setns
    lo_up = loopback_up
    seccomp: tuple[ctypes.Array[ctypes.c_char], _SockFprog] | None = None
    program = seccomp_filter() if no_new_privs else None
    if program is not None:  # (the filter buffer is kept alive with the program)
        filters = ctypes.create_string_buffer(program, len(program))
        seccomp = (filters, _SockFprog(len(program) // 8,
                                       ctypes.cast(filters, ctypes.c_void_p)))

    def setup() -> None:
        here: int | None = None
        if ids is not None and ids[0] in gone:
            raise OSError(errno.EPERM, "the sandbox uid is being reclaimed")
        if netns is not None:
            check(setns(netns, CLONE_NEWNET))
        elif new_net:
            check(unshare(net_flags))
            lo_up()
        if bind_args is not None:
            check(unshare(_CLONE_NEWNS))
            check(mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None))
            check(mount(bind_args[0], bind_args[1], None, _MS_BIND, None))
            if shown_args is not None:
                cover_dir, shown_entries = shown_args
                check(mount(b"tmpfs", cover_dir, b"tmpfs",
                            _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, b"mode=0755,size=64k"))
                for source, identity, destination in shown_entries:
                    held = open_(source, _DIR_FLAGS)
                    found = fstat(held)
                    if (found.st_dev, found.st_ino) != identity:
                        raise OSError(errno.ESTALE, "a folder to bind was replaced")
                    mkdir(destination, 0o755)
                    check(mount(b"/proc/self/fd/%d" % held, destination, None, _MS_BIND,
                                None))
                    close(held)
        elif sealed_args is not None:
            seal, path, cwd_steps = sealed_args
            seal_apply(seal, libc)
            # The working directory through the workspace's new mount (see below).
            here = open_(path, _DIR_FLAGS)
            for step in cwd_steps:
                nxt = open_(step, _DIR_FLAGS, dir_fd=here)
                close(here)
                here = nxt
        elif reach_args is not None:
            cover, steps, cwd_steps = reach_args
            check(unshare(_CLONE_NEWNS))
            check(mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None))
            # The workspace's parents are root's: nothing the sandbox wrote is on
            # this path, and its last step is no link.
            held = open_(steps[-1], _DIR_FLAGS)
            check(mount(b"tmpfs", cover, b"tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
                        b"mode=0711,size=64k"))
            for step in steps:
                mkdir(step, 0o711)
            check(mount(b"/proc/self/fd/%d" % held, steps[-1], None, _MS_BIND, None))
            close(held)
            # The directory through the new mount: one opened before it (cwd_fd)
            # belongs to the daemon's namespace, where getcwd cannot name it.
            here = open_(steps[-1], _DIR_FLAGS)
            for step in cwd_steps:
                nxt = open_(step, _DIR_FLAGS, dir_fd=here)
                close(here)
                here = nxt
        for fd in join:
            write(fd, b"0")
        if ids is not None:
            setgroups([])
            setresgid(ids[1], ids[1], ids[1])
            setresuid(ids[0], ids[0], ids[0])
        check(prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0))
        if getppid() != parent:  # the daemon died before the death signal was armed
            exit_(111)
        for which, value in limits_list:
            setrlimit(which, value)
        if here is not None:
            fchdir(here)
            close(here)
        elif cwd_fd is not None:
            fchdir(cwd_fd)
        if no_new_privs:
            check(prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        if seccomp is not None:
            check(prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER,
                        ctypes.addressof(seccomp[1]), 0, 0))

    return setup


def spawn_kwargs(limits: Limits | None, *, drop: bool = True, cwd_fd: int | None = None,
                 bind: tuple[str, str] | None = None, death: int = signal.SIGKILL,
                 no_new_privs: bool = False, user: tuple[int, int] | None = None,
                 cgroup_fds: Sequence[int] = (), new_net: bool = False,
                 netns: int | None = None, reach: Reach | None = None,
                 shown: tuple[str, Sequence[tuple[int, str]]] | None = None,
                 sealed: Sealed | None = None) -> dict[str, Any]:
    """Keyword arguments for ``subprocess``/``asyncio`` process creation: a new
    session (its own process group, no controlling terminal) and :func:`child_setup`
    (with the switch to ``user``, or ``nobody``, when ``drop`` and the daemon is
    root; into the cgroup whose ``cgroup.procs`` are ``cgroup_fds``)."""
    ids = sandbox_ids(user) if drop else None
    return {"start_new_session": True, "close_fds": True,
            "preexec_fn": child_setup(limits, ids=ids, cwd_fd=cwd_fd,
                                      bind=bind if ids is not None else None,
                                      death=death, no_new_privs=no_new_privs,
                                      cgroup_fds=cgroup_fds, new_net=new_net,
                                      netns=netns,
                                      reach=reach if ids is not None else None,
                                      shown=shown if ids is not None else None,
                                      sealed=sealed if ids is not None else None)}


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
