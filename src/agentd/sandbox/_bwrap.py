"""The bubblewrap sandbox: what it mounts, and how it is started and killed.

Namespaces: user (nested ones refused: ``--disable-userns``), pid, ipc, uts (hostname
``sandbox``), cgroup, and net unless the network is granted. The filesystem is built
from nothing: ``/usr`` read-only, ``/bin`` ``/lib`` ``/lib64`` ``/sbin`` as the host
has them (links or read-only binds), a few files of ``/etc`` programs need
(:data:`ETC_FILES`, and :data:`ETC_NETWORK` with the network) read-only, synthetic
``passwd``, ``group``, ``nsswitch.conf`` and ``hosts``, a new ``/proc`` and ``/dev``, a
private ``/tmp`` of ``Limits.file_size_mb``, and the workspace read-write at
``/workspace``. Nothing else of the host: not its ``/etc`` (``shadow``), ``/root``,
``/home``, ``/var``, ``/run`` or the daemon's home.

Arguments go to bubblewrap through a memfd (``--args``), so the environment given to
the sandbox does not show in ``/proc/PID/cmdline`` on the host. ``--info-fd`` tells
the pid of the sandbox's pid 1: killing it ends the pid namespace, every process in it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agentd.sandbox._limits import Limits, sandbox_ids, spawn_kwargs

ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime",
             "timezone", "ssl/certs", "ssl/openssl.cnf", "ca-certificates",
             "ca-certificates.conf", "mime.types", "os-release", "debian_version",
             "inputrc", "magic", "papersize")
ETC_NETWORK = ("resolv.conf", "hosts", "services", "protocols", "gai.conf", "host.conf")
ROOT_LINKS = ("bin", "lib", "lib32", "lib64", "libx32", "sbin")
WORKSPACE = "/workspace"
_CHILD_PID = re.compile(rb'"child-pid"\s*:\s*(\d+)')


def binary() -> str | None:
    return shutil.which("bwrap")


@functools.cache
def mountpoint() -> str:
    """An empty directory the workspace is bind-mounted on, in the private mount
    namespace of each bubblewrap process (see ``child_setup``); made once a process."""
    return tempfile.mkdtemp(prefix="agentd-sandbox-mnt-")


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


def synthetic_etc(uid: int, gid: int, *, network: bool) -> dict[str, bytes]:
    """``/etc`` files written for the sandbox rather than taken from the host."""
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
    if not network:
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
    spawn: dict[str, object] = field(default_factory=dict)
    _info_data: bytes = b""

    def close_child_fds(self) -> None:
        for fd in self.pass_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.pass_fds = []

    def close(self) -> None:
        self.close_child_fds()
        if self.info >= 0:
            with contextlib.suppress(OSError):
                os.close(self.info)
            self.info = -1

    def sandbox_pid(self) -> int | None:
        """The host pid of the sandbox's pid 1, once bubblewrap has told it."""
        if self.info >= 0:
            with contextlib.suppress(BlockingIOError, OSError):
                while len(self._info_data) < 4096:
                    chunk = os.read(self.info, 4096)
                    if not chunk:
                        break
                    self._info_data += chunk
        match = _CHILD_PID.search(self._info_data)
        return int(match.group(1)) if match else None

    def kill_sandbox(self) -> None:
        pid = self.sandbox_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _root_entries() -> list[str]:
    args: list[str] = []
    for name in ROOT_LINKS:
        path = f"/{name}"
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def build(command: Sequence[str], *, workspace: Path, workspace_fd: int, network: bool,
          env: dict[str, str], chdir: str, limits: Limits) -> Launch:
    """Everything needed to start ``command`` in a new bubblewrap sandbox.

    ``workspace_fd`` is an open descriptor of the workspace (used when the daemon is
    root: see ``child_setup``); the caller keeps it open until the process started.
    """
    ids = sandbox_ids()
    uid, gid = ids if ids is not None else (os.getuid(), os.getgid())
    source = mountpoint() if ids is not None else str(workspace)
    launch = Launch(argv=[])
    try:
        args = ["--unshare-user", "--disable-userns", "--unshare-pid", "--unshare-ipc",
                "--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox",
                "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv"]
        if not network:
            args.append("--unshare-net")
        for key, value in env.items():
            args += ["--setenv", key, value]
        args += ["--ro-bind", "/usr", "/usr", *_root_entries()]
        etc = ETC_FILES + (ETC_NETWORK if network else ())
        for name in etc:
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        for name, data in synthetic_etc(uid, gid, network=network).items():
            fd = _memfd(f"etc-{name}", data)
            launch.pass_fds.append(fd)
            args += ["--perms", "0644", "--ro-bind-data", str(fd), f"/etc/{name}"]
        args += ["--proc", "/proc", "--dev", "/dev",
                 "--size", str(limits.file_size_mb * 1024 * 1024), "--tmpfs", "/tmp",
                 "--bind", source, WORKSPACE, "--chdir", chdir]
        info_read, info_write = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(info_read, False)
        launch.info = info_read
        launch.pass_fds.append(info_write)
        args += ["--info-fd", str(info_write)]
        args_fd = _memfd("bwrap-args", "\0".join(args).encode() + b"\0")
        launch.pass_fds.append(args_fd)
        launch.argv = [binary() or "bwrap", "--args", str(args_fd), "--", *command]
        launch.spawn = spawn_kwargs(limits, bind=(workspace_fd, source))
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
        fd = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        launch = None
        try:
            launch = build(["true"], workspace=workspace, workspace_fd=fd, network=False,
                           env={"PATH": "/usr/bin:/bin"}, chdir=WORKSPACE,
                           limits=Limits())
            done = subprocess.run(  # noqa: PLW1510 - the status is examined below
                launch.argv, pass_fds=launch.pass_fds, env={}, capture_output=True,
                timeout=30, **launch.spawn)  # type: ignore[call-overload]
        except (OSError, subprocess.SubprocessError) as exc:
            return f"bwrap could not be started: {exc}"
        finally:
            if launch is not None:
                launch.close()
            os.close(fd)
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip() or f"status {done.returncode}"
        if "namespace" in why.lower() or "permission" in why.lower():
            return f"user namespaces are not usable: {why}"
        return f"bwrap fails here: {why}"
    return None


def status_json(data: bytes) -> dict[str, object]:  # pragma: no cover - debugging aid
    return dict(json.loads(data.decode()))
