"""The bubblewrap sandbox: what it mounts, and how it is started and killed.

Namespaces: user (nested ones refused: ``--disable-userns``), pid, ipc, uts (hostname
``sandbox``), cgroup, and net, always: the sandbox has its own loopback and nothing
else. A network grant reaches out only through the egress proxy
(:mod:`agentd.sandbox.egress`) on the sandbox's ``127.0.0.1:3128`` (``HTTP_PROXY`` and
the like point there): under root the namespace is one the daemon made with the proxy
listening in it; otherwise the proxy's unix socket is bound at
``/run/agentd/egress.sock`` and a forwarder in the sandbox relays to it.

The filesystem is built from nothing: ``/usr`` read-only, ``/bin`` ``/lib`` ``/lib64``
``/sbin`` as the host has them (links or read-only binds), a few files of ``/etc``
programs need (:data:`ETC_FILES`, and :data:`ETC_NETWORK` with the network) read-only,
synthetic ``passwd``, ``group``, ``nsswitch.conf`` and ``hosts``, a new ``/proc`` and
``/dev``, a private ``/tmp`` of ``Limits.file_size_mb``, and the workspace read-write at
``/workspace``. Everything but ``/tmp`` and ``/workspace`` is read-only. Nothing else
of the host: not its ``/etc`` (``shadow``), ``/root``, ``/home``, ``/var``, ``/run`` or
the daemon's home. Its first process is pid 1 of its namespace (``--as-pid-1``): a
``sh`` that runs the command as its child (``BubblewrapBackend`` wraps it), or the
persistent shell.

A seccomp filter refuses a few kernel interfaces (:data:`DENIED_SYSCALLS`). Arguments
go to bubblewrap through a memfd (``--args``), so the environment given to
the sandbox does not show in ``/proc/PID/cmdline`` on the host. ``--info-fd`` tells
the pid of the sandbox's pid 1: killing it ends the pid namespace, every process in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentd.errors import ToolError
from agentd.sandbox import egress as _egress
from agentd.sandbox.limits import (
    SANDBOX_PATH,
    Limits,
    sandbox_ids,
    seccomp_filter,
    spawn_kwargs,
)

ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime",
             "timezone", "ssl/certs", "ssl/openssl.cnf", "ca-certificates",
             "ca-certificates.conf", "mime.types", "os-release", "debian_version",
             "inputrc", "magic", "papersize")
# No resolv.conf: there is no DNS in the sandbox (the egress proxy resolves).
ETC_NETWORK = ("services", "protocols", "gai.conf", "host.conf")
ROOT_LINKS = ("bin", "lib", "lib32", "lib64", "libx32", "sbin")
WORKSPACE = "/workspace"
_CHILD_PID = re.compile(rb'"child-pid"\s*:\s*(\d+)')


def binary() -> str | None:
    return shutil.which("bwrap")


_MOUNTPOINTS = ("/mnt", "/media", "/srv")
_mountpoint: list[str] = []


def mountpoint() -> str:
    """The directory the workspace is bind-mounted on, in the private mount namespace
    of each bubblewrap process (see ``child_setup``), for bubblewrap to bind from.
    Covering it there changes nothing on the host, so an existing directory serves
    (``/mnt``); only a host with none of them gets a temporary one."""
    if not _mountpoint or not os.path.isdir(_mountpoint[0]):
        found = next((path for path in _MOUNTPOINTS if os.path.isdir(path)), None)
        _mountpoint[:] = [found or tempfile.mkdtemp(prefix="agentd-sandbox-mnt-")]
    return _mountpoint[0]


def shown_mountpoint() -> str:
    """Where, in the same private mount namespace (root only), a small tmpfs holds the
    read-only folders bubblewrap binds into the sandbox (:mod:`.binds`): another of
    the existing directories than :func:`mountpoint`, else a temporary one."""
    if not _shown or not os.path.isdir(_shown[0]):
        taken = mountpoint()
        found = next((path for path in _MOUNTPOINTS
                      if path != taken and os.path.isdir(path)), None)
        _shown[:] = [found or tempfile.mkdtemp(prefix="agentd-sandbox-ro-")]
    return _shown[0]


_shown: list[str] = []


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def synthetic_etc(uid: int, gid: int) -> dict[str, bytes]:
    """``/etc`` files written for the sandbox rather than taken from the host."""
    # An agent's own uid is ``sandbox`` (the same name for every agent: nothing
    # of the host's users or of the other agents shows inside).
    passwd = ["root:x:0:0:root:/root:/usr/sbin/nologin"]
    group = ["root:x:0:"]
    if uid == 65534:
        passwd.append("nobody:x:65534:65534:nobody:/workspace:/bin/sh")
    else:
        passwd += ["nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin",
                   f"sandbox:x:{uid}:{gid}:sandbox:/workspace:/bin/sh"]
    group.append("nogroup:x:65534:")
    if gid not in (0, 65534):
        group.append(f"sandbox:x:{gid}:")
    files = {
        "passwd": "\n".join(passwd) + "\n",
        "group": "\n".join(group) + "\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\n"
                         "hosts: files dns\nnetworks: files\nprotocols: files\n"
                         "services: files\n",
        "hostname": "sandbox\n",
    }
    # The sandbox's own names, with or without a network grant (the proxy resolves
    # the rest on the host's side).
    files["hosts"] = "127.0.0.1 localhost sandbox\n::1 localhost ip6-localhost\n"
    return {name: text.encode() for name, text in files.items()}


@dataclass
class Launch:
    """An argv for bubblewrap and the descriptors that must stay open until it has
    started (``pass_fds``), then be closed by the caller; ``info`` is read for the
    pid of the sandbox's pid 1."""

    argv: list[str]
    pass_fds: list[int] = field(default_factory=list)
    info: int = -1
    monitor: int = -1  # bubblewrap's own pid, once started
    spawn: dict[str, Any] = field(default_factory=dict)
    #: Descriptors the child's set-up uses before bubblewrap runs, never passed to
    #: it (nor, through it, to the sandbox): closed with ``pass_fds``.
    held: list[int] = field(default_factory=list)
    _info_data: bytes = b""
    _info_ended: bool = False

    def close_child_fds(self) -> None:
        for fd in [*self.pass_fds, *self.held]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.pass_fds = []
        self.held = []

    def close(self) -> None:
        self.close_child_fds()
        if self.info >= 0:
            with contextlib.suppress(OSError):
                os.close(self.info)
            self.info = -1

    def _sandbox_pid(self) -> int | None:
        """The host pid of the sandbox's pid 1, once bubblewrap has told it."""
        if self.info >= 0:
            with contextlib.suppress(BlockingIOError, OSError):
                while len(self._info_data) < 4096:
                    chunk = os.read(self.info, 4096)
                    if not chunk:
                        self._info_ended = True
                        break
                    self._info_data += chunk
        match = _CHILD_PID.search(self._info_data)
        return int(match.group(1)) if match else None

    async def began(self, exited: asyncio.Future[int]) -> bool:
        """Whether bubblewrap made the sandbox: True once it tells the sandbox's pid 1
        (right after the namespaces are made, before anything runs in them); False
        when it exits, or closes the info descriptor, without telling it. Then it
        failed before the sandbox existed: the command never ran. ``exited``:
        bubblewrap's ``proc.wait()``. Call it once the caller's copy of the info
        pipe's write end is closed (``close_child_fds``)."""
        if self._sandbox_pid() is not None:
            return True
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(self.info, readable.set)
        try:
            while not (self._info_ended or exited.done()):
                readable.clear()
                waiter: asyncio.Future[Any] = asyncio.ensure_future(readable.wait())
                pending: set[asyncio.Future[Any]] = {waiter, exited}
                try:
                    await asyncio.wait(pending,
                                       return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                if self._sandbox_pid() is not None:
                    return True
        finally:
            loop.remove_reader(self.info)
        return self._sandbox_pid() is not None

    def kill_sandbox(self) -> None:
        """SIGKILL the sandbox's pid 1 (the pid namespace ends with it), through a
        pidfd checked to be bubblewrap's child: a pid reused since cannot be hit."""
        pid = self._sandbox_pid()
        if pid is None or self.monitor < 0:
            return
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return  # gone already
        try:
            stat_line = Path(f"/proc/{pid}/stat").read_bytes()
            ppid = int(stat_line[stat_line.rindex(b")") + 2:].split()[1])
            if ppid == self.monitor:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass
        finally:
            os.close(fd)


def _root_entries() -> list[str]:
    args: list[str] = []
    for name in ROOT_LINKS:
        path = f"/{name}"
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def proxied(command: Sequence[str], socket_path: str
            ) -> tuple[list[str], dict[str, str]]:
    """``command`` behind the egress forwarder, and the variables it needs; the
    forwarder is ``python3`` (a ToolError ``network_denied`` without it: the network
    is refused, never given unfiltered)."""
    python = shutil.which("python3", path=SANDBOX_PATH)
    if python is None:
        raise ToolError("the sandbox has no python3 to run the egress forwarder: "
                        "commands cannot be given the network here", code="network_denied")
    return _egress.forwarder(python, socket_path, command)


def build(command: Sequence[str], *, workspace: Path, egress: str | None,
          env: dict[str, str], chdir: str, limits: Limits, netns: int | None = None,
          user: tuple[int, int] | None = None, cgroup_fds: Sequence[int] = (),
          shown: Sequence[tuple[int, str]] = ()) -> Launch:
    """Everything needed to start ``command`` in a new bubblewrap sandbox, as
    ``user`` (the agent's uid and gid; ``nobody`` without one) when the daemon is
    root, in the cgroup whose ``cgroup.procs`` are ``cgroup_fds``. The network:
    ``netns``, a network namespace the daemon made, with the egress proxy listening
    in it (:meth:`EgressProxy.inlet`); else ``egress``, the unix socket of the proxy,
    reached through the forwarder in a namespace of the sandbox's own; else none.

    When the daemon is root, bubblewrap (as the sandbox's uid) may not be able to
    reach the workspace's path: it binds :func:`mountpoint` instead, on which
    ``child_setup`` has mounted the workspace in a mount namespace of its own.

    ``shown``: ``(fd, sandbox path)`` of read-only folders (:mod:`.binds`; the
    descriptors become the Launch's, closed with it). Bubblewrap binds the open
    directory (``--ro-bind-fd``), or as root, where it could not open that
    descriptor's path as the sandbox's uid, the folder ``child_setup`` mounted from
    it under :func:`shown_mountpoint`. Either way what shows is that very directory.
    """
    ids = sandbox_ids(user)
    uid, gid = ids if ids is not None else (os.getuid(), os.getgid())
    source = mountpoint() if ids is not None else str(workspace)
    launch = Launch(argv=[])
    # (root) the descriptors are the child set-up's, never bubblewrap's: an open
    # directory handed into the sandbox would let it walk out of the folder (``..``).
    (launch.held if ids is not None else launch.pass_fds).extend(fd for fd, _ in shown)
    try:
        cover = shown_mountpoint() if ids is not None and shown else None
        args = ["--unshare-user", "--disable-userns", "--unshare-pid", "--unshare-ipc",
                "--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox",
                "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv",
                # The first process is pid 1 itself (a wrapping sh, or the persistent
                # shell). With bubblewrap's own init as pid 1, its monitor exits
                # without reaping that init: an orphan left to the host's init (a
                # zombie, counted against the process limit, where that init is slow
                # to reap or is the daemon itself).
                "--as-pid-1"]
        network = netns is not None or egress is not None
        if netns is not None:  # joined before bubblewrap starts (``spawn_kwargs``)
            env = {**env, **_egress.PROXY_ENV}
        elif egress is not None:
            args.append("--unshare-net")
            command, extra = proxied(command, _egress.SANDBOX_SOCKET)
            env = {**env, **extra}
            args += ["--ro-bind", egress, _egress.SANDBOX_SOCKET]
        else:
            args.append("--unshare-net")
        for key, value in env.items():
            args += ["--setenv", key, value]
        args += ["--ro-bind", "/usr", "/usr", *_root_entries()]
        etc = ETC_FILES + (ETC_NETWORK if network else ())
        for name in etc:
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        for name, data in synthetic_etc(uid, gid).items():
            fd = _memfd(f"etc-{name}", data)
            launch.pass_fds.append(fd)
            args += ["--perms", "0644", "--ro-bind-data", str(fd), f"/etc/{name}"]
        args += ["--proc", "/proc", "--dev", "/dev",
                 "--size", str(limits.file_size_mb * 1024 * 1024), "--tmpfs", "/tmp",
                 "--bind", source, WORKSPACE]
        for index, (fd, target) in enumerate(shown):
            args += (["--ro-bind", f"{cover}/{index}", target] if cover is not None
                     else ["--ro-bind-fd", str(fd), target])
        # The root and /dev are tmpfs: read-only, they cannot hold files (nor fill
        # the host's memory); /tmp has a size.
        args += ["--remount-ro", "/", "--remount-ro", "/dev", "--chdir", chdir]
        program = seccomp_filter()
        if program is not None:
            seccomp_fd = _memfd("bwrap-seccomp", program)
            launch.pass_fds.append(seccomp_fd)
            args += ["--seccomp", str(seccomp_fd)]
        info_read, info_write = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(info_read, False)
        launch.info = info_read
        launch.pass_fds.append(info_write)
        args += ["--info-fd", str(info_write)]
        args_fd = _memfd("bwrap-args", "\0".join(args).encode() + b"\0")
        launch.pass_fds.append(args_fd)
        launch.argv = [binary() or "bwrap", "--args", str(args_fd), "--", *command]
        launch.spawn = spawn_kwargs(limits, bind=(str(workspace), source), user=user,
                                    cgroup_fds=cgroup_fds, netns=netns,
                                    shown=(cover, [(fd, str(index)) for index, (fd, _)
                                                   in enumerate(shown)])
                                    if cover is not None else None)
    except BaseException:
        launch.close()
        raise
    return launch


def probe() -> str | None:
    """Why bubblewrap cannot be used here, or None: checks the obvious, then runs a
    sandboxed ``true`` exactly as commands are run."""
    if binary() is None:
        return "bwrap not found on PATH"
    for path, label in (("/proc/sys/user/max_user_namespaces", "user.max_user_namespaces"),
                        ("/proc/sys/kernel/unprivileged_userns_clone",
                         "kernel.unprivileged_userns_clone")):
        with contextlib.suppress(OSError, ValueError):
            if int(Path(path).read_text().strip()) == 0:
                return f"user namespaces are disabled: {label} is 0"
    with tempfile.TemporaryDirectory(prefix="agentd-probe-") as tmp:
        workspace = Path(tmp)
        ids = sandbox_ids()
        if ids is not None:
            os.chown(workspace, *ids)
        launch = None
        try:
            launch = build(["true"], workspace=workspace, egress=None,
                           env={"PATH": "/usr/bin:/bin"}, chdir=WORKSPACE,
                           limits=Limits())
            done = subprocess.run(launch.argv, pass_fds=launch.pass_fds, env={},
                                  capture_output=True, timeout=30, check=False,
                                  **launch.spawn)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"bwrap could not be started: {exc}"
        finally:
            if launch is not None:
                launch.close()
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip() or f"status {done.returncode}"
        if "namespace" in why.lower() or "permission" in why.lower():
            return f"user namespaces are not usable: {why}"
        return f"bwrap fails here: {why}"
    return None

