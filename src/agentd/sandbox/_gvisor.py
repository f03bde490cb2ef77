"""The gVisor sandbox: an OCI bundle run by ``runsc``.

Each command gets a bundle in a temporary directory: ``config.json`` and an empty
read-only ``rootfs`` holding only the ``/bin``-style links, with the same layout as
the bubblewrap sandbox (``/usr`` and a few ``/etc`` files read-only, synthetic
``passwd``/``group``/``nsswitch.conf``/``hosts``, a tmpfs ``/tmp``, the workspace
read-write at ``/workspace``), the limits as ``process.rlimits``, no capabilities,
``noNewPrivileges``. It runs as ``runsc --root STATE --network=none --ignore-cgroups
run --bundle DIR ID`` (never the host's network: a grant is refused), with a state
directory of its own inside the bundle directory; ``runsc kill --all`` and ``runsc
delete -force`` end it (after it ended, or to kill it), then the bundle is removed.
``runsc do`` is never used: it exposes the host's root filesystem.

``runsc`` runs as root (the sandbox then runs as ``nobody`` inside gVisor's own
kernel); as another user ``--rootless`` is tried. Known gaps of the runsc this was
built against (0.0~20221219): it rejects ``AT_NO_AUTOMOUNT`` in statx/fstatat, which
today's coreutils pass (``ls`` and ``stat`` fail: the probe reports it and the backend
is not offered); it did not enforce ``RLIMIT_CPU`` (the wall clock still ends a
command); ``/tmp`` has no size of its own. A bundle is left in the temp directory if
the daemon is killed while a command runs (runsc itself dies with it): the next
daemon's probe removes it (:func:`sweep`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentd.sandbox._bwrap import ETC_FILES, ROOT_LINKS, WORKSPACE, synthetic_etc
from agentd.sandbox.limits import Limits, rlimits, sandbox_ids, spawn_kwargs

_PREFIX = "agentd-gvisor-"
_RLIMIT_NAMES = {"RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NPROC", "RLIMIT_CORE"}
OLD_STATX = ("this runsc ({version}) is too old for the host's programs: it refuses "
             "statx()/fstatat() with AT_NO_AUTOMOUNT, so coreutils' ls and stat fail "
             "with EINVAL inside the sandbox; a newer gVisor is needed")


def binary() -> str | None:
    return shutil.which("runsc")


def _rlimit_name(which: int) -> str:
    return next(name for name in _RLIMIT_NAMES if getattr(resource, name) == which)


@dataclass
class Bundle:
    """A bundle directory and the runsc invocation for it."""

    directory: Path
    container: str
    argv: list[str]
    spawn: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> Path:
        return self.directory / "state"

    def runsc(self, *args: str) -> list[str]:
        return [binary() or "runsc", "--root", str(self.state), *args]

    def stop_sync(self) -> None:
        """Kill every process of the container, then delete it, whatever its state.
        (``runsc kill --all`` first: ``delete -force`` alone waits seconds for a
        running container, and ``runsc run`` killed first leaves it to do so.)"""
        for args in (("kill", "--all", self.container, "KILL"),
                     ("delete", "-force", self.container)):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(self.runsc(*args), capture_output=True, timeout=30,
                               check=False)

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_sync)

    def remove_sync(self) -> None:
        """Stop the container, then remove the bundle."""
        self.stop_sync()
        shutil.rmtree(self.directory, ignore_errors=True)

    async def remove(self) -> None:
        await asyncio.to_thread(self.remove_sync)


def _mount(destination: str, source: str, *, kind: str = "bind",
           options: Sequence[str] = ("rbind", "ro")) -> dict[str, Any]:
    return {"destination": destination, "type": kind, "source": source,
            "options": list(options)}


def build(command: Sequence[str], *, workspace: Path, env: dict[str, str],
          chdir: str, limits: Limits, user: tuple[int, int] | None = None,
          shown: Sequence[tuple[str, str]] = ()) -> Bundle:
    """Write a bundle for ``command`` and return how to run it (as ``user``, the
    agent's uid and gid, when the daemon is root), with ``shown``, (host folder,
    sandbox path) pairs, mounted read-only (an agent's skills). Never the host's network
    (``--network=none``, a network namespace of its own): a grant is refused by the
    backend, which cannot route it through the egress proxy."""
    ids = sandbox_ids(user)
    uid, gid = ids if ids is not None else (os.getuid(), os.getgid())
    directory = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-"))
    try:
        rootfs = directory / "rootfs"
        rootfs.mkdir()
        (directory / "state").mkdir(mode=0o700)
        mounts = [_mount("/proc", "proc", kind="proc", options=()),
                  _mount("/tmp", "tmpfs", kind="tmpfs",
                         options=("nosuid", "nodev", "mode=1777")),
                  _mount("/usr", "/usr")]
        for name in ROOT_LINKS:
            path = f"/{name}"
            if os.path.islink(path):
                (rootfs / name).symlink_to(os.readlink(path))
            elif os.path.isdir(path):
                mounts.append(_mount(path, path))
        etc_dir = directory / "etc"
        etc_dir.mkdir()
        synthetic = synthetic_etc(uid, gid)
        for name, data in synthetic.items():
            (etc_dir / name).write_bytes(data)
            os.chmod(etc_dir / name, 0o644)
            mounts.append(_mount(f"/etc/{name}", str(etc_dir / name)))
        for name in ETC_FILES:
            if name in synthetic:
                continue
            source = os.path.realpath(f"/etc/{name}")
            if os.path.exists(source):
                mounts.append(_mount(f"/etc/{name}", source))
        mounts.append(_mount(WORKSPACE, str(workspace), options=("rbind", "rw")))
        mounts += [_mount(target, source, options=("bind", "ro", "nosuid", "nodev"))
                   for source, target in shown]
        config = {
            "ociVersion": "1.0.0",
            "process": {
                "terminal": False,
                "user": {"uid": uid, "gid": gid, "additionalGids": []},
                "args": list(command),
                "env": [f"{key}={value}" for key, value in env.items()],
                "cwd": chdir,
                "capabilities": {key: [] for key in ("bounding", "effective",
                                                     "inheritable", "permitted",
                                                     "ambient")},
                "rlimits": [{"type": _rlimit_name(which), "soft": soft, "hard": hard}
                            for which, (soft, hard) in rlimits(limits)],
                "noNewPrivileges": True,
            },
            "root": {"path": "rootfs", "readonly": True},
            "hostname": "sandbox",
            "mounts": mounts,
            "linux": {"namespaces": [{"type": kind} for kind in
                                     ("pid", "ipc", "uts", "mount", "network")]},
        }
        (directory / "config.json").write_text(json.dumps(config))
        container = f"agentd-{secrets.token_hex(8)}"
        (directory / "container").write_text(container)
        bundle = Bundle(directory=directory, container=container, argv=[])
        flags = ["--network=none", "--ignore-cgroups"]
        if os.geteuid() != 0:
            flags.append("--rootless")
        bundle.argv = bundle.runsc(*flags, "run", "--bundle", str(directory), container)
        # runsc needs root and a Go-sized address space: the limits are applied by
        # gVisor inside; runsc itself gets only the death signal and no core dumps.
        bundle.spawn = spawn_kwargs(None, drop=False)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return bundle


def sweep() -> list[Path]:
    """Remove the bundles of daemons that died while a command ran (their directory
    names carry their pid), deleting any container still recorded in them."""
    removed = []
    for directory in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*-*"):
        try:
            pid = int(directory.name.removeprefix(_PREFIX).split("-")[0])
            os.kill(pid, 0)
            continue  # its daemon lives
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            continue
        with contextlib.suppress(OSError):
            container = (directory / "container").read_text().strip()
            Bundle(directory=directory, container=container, argv=[]).stop_sync()
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory)
    return removed


def _version() -> str:
    try:
        out = subprocess.run([binary() or "runsc", "--version"], capture_output=True,
                             text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown version"
    first = out.strip().splitlines()[0] if out.strip() else "unknown version"
    return first.removeprefix("runsc version ").strip()


def _run_sync(command: Sequence[str], workspace: Path) -> subprocess.CompletedProcess[bytes]:
    bundle = build(command, workspace=workspace,
                   env={"PATH": "/usr/bin:/bin"}, chdir=WORKSPACE, limits=Limits())
    try:
        return subprocess.run(bundle.argv, env={"PATH": "/usr/bin:/bin"},
                              capture_output=True, timeout=60, check=False,
                              **bundle.spawn)
    finally:
        bundle.remove_sync()


def probe() -> tuple[str | None, bool]:
    """(why gVisor cannot be used here or None, whether it runs at all): runs a
    sandboxed ``true``, then ``ls /`` (which an old runsc cannot run)."""
    if binary() is None:
        return "runsc not found on PATH", False
    sweep()
    with tempfile.TemporaryDirectory(prefix="agentd-probe-") as tmp:
        workspace = Path(tmp)
        ids = sandbox_ids()
        if ids is not None:
            os.chown(workspace, *ids)
        try:
            done = _run_sync(["/bin/true"], workspace)
            if done.returncode != 0:
                why = (done.stderr.decode(errors="replace").strip()
                       or f"status {done.returncode}")
                return f"runsc fails here: {why[-500:]}", False
            done = _run_sync(["/bin/ls", "/"], workspace)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"runsc could not be started: {exc}", False
    if done.returncode != 0 and b"Invalid argument" in done.stderr:
        return OLD_STATX.format(version=_version()), True
    if done.returncode != 0:
        return (f"runsc cannot run ls: {done.stderr.decode(errors='replace').strip()}",
                True)
    return None, True
