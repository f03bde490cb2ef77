"""A cgroup per sandbox: memory and processes capped for the sandbox as a whole.

``RLIMIT_AS`` caps one process's address space and ``RLIMIT_NPROC`` counts a uid's
processes: forty processes of 1 GB each stay under the first, and every sandbox of
one uid shares the second. A cgroup holds everything a sandbox starts, however it
forks, so its memory (``memory_mb``, swap included) and process count
(``processes``) are capped over the whole sandbox. When the kernel kills a process at
the memory cap, the cgroup's ``oom_kill`` counter says so, and the result says
``killed="memory"``; and at the end every process left in it is killed, including
one that left its process group (``setsid``).

Where: under the daemon's own cgroup (so the limits of the service that runs the
daemon cover its sandboxes too), in a directory ``agentd``, one child per sandbox.
cgroup v1 needs the ``memory`` and ``pids`` hierarchies writable (root); cgroup v2
needs the daemon's cgroup delegated with both controllers (systemd ``Delegate=yes``);
as v2 gives no controllers to the children of a cgroup holding processes, a daemon
alone in its cgroup moves itself to a leaf ``daemon`` beside ``agentd``. Where neither works,
:func:`support` says why and the sandboxes fall back to the rlimits alone.

The rlimits stay in either case: one process still gets a clean ``MemoryError`` at
``memory_mb``, and ``RLIMIT_NPROC`` still counts the agent's processes over all its
sandboxes.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Cgroup", "Support", "cached", "support"]

log = logging.getLogger(__name__)

_ROOT = Path("/sys/fs/cgroup")
_DIR = "agentd"
_lock = threading.Lock()
_cache: dict[int, Support] = {}


@dataclass(frozen=True)
class Support:
    """Whether sandboxes get cgroups here. ``parents``: controller (``memory``,
    ``pids``; one ``""`` entry for v2) to the directory their cgroups are made in;
    empty with ``reason`` saying why none."""

    version: int = 0
    parents: dict[str, Path] = field(default_factory=dict)
    reason: str = ""

    @property
    def usable(self) -> bool:
        return bool(self.parents)

    def create(self, *, memory_mb: int, processes: int) -> Cgroup:
        """A new cgroup with these caps (OSError when the kernel refuses)."""
        name = f"s{os.getpid()}-{secrets.token_hex(6)}"
        made: list[Path] = []
        try:
            for path in self.parents.values():
                path = path / name
                path.mkdir(mode=0o755)
                made.append(path)
            cgroup = Cgroup(version=self.version, dirs=made, memory_mb=memory_mb)
            cgroup.configure(processes)
            return cgroup
        except BaseException:
            for path in made:
                with contextlib.suppress(OSError):
                    path.rmdir()
            raise


#: How long the sweep at start waits, in all, for dead daemons' sandboxes to go.
_SWEEP_WAIT_S = 2.0


def cached() -> Support | None:
    """What :func:`support` found, if it has run in this process (no blocking)."""
    return _cache.get(os.getpid())


def support() -> Support:
    """Cgroups for sandboxes here (worked out once per process: a trial cgroup is
    made, capped and removed)."""
    pid = os.getpid()
    with _lock:
        found = _cache.get(pid)
        if found is None:
            found = _detect()
            _cache.clear()
            _cache[pid] = found
        return found


def _own(controller: str) -> str | None:
    """The daemon's cgroup path in ``controller``'s hierarchy (``""``: v2)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, names, path = line.split(":", 2)
        if (controller == "" and names == "" and line.startswith("0::")) or \
                controller in names.split(","):
            return path
    return None


def _detect() -> Support:
    parents: dict[str, Path] = {}
    version = 0
    if (_ROOT / "memory" / "memory.limit_in_bytes").exists() and \
            (_ROOT / "pids").is_dir():
        version = 1
        for controller in ("memory", "pids"):
            own = _own(controller)
            if own is None:
                return Support(reason=f"cgroup v1: no {controller} cgroup in "
                                      "/proc/self/cgroup")
            parents[controller] = _ROOT / controller / own.lstrip("/") / _DIR
    elif (_ROOT / "cgroup.controllers").exists():
        version = 2
        own = _own("")
        if own is None:
            return Support(reason="cgroup v2: no cgroup in /proc/self/cgroup")
        parents[""] = _ROOT / own.lstrip("/") / _DIR
    else:
        return Support(reason="no cgroup v1 memory and pids hierarchies, no cgroup v2")
    try:
        for path in parents.values():
            path.mkdir(mode=0o755, exist_ok=True)
            if version == 2:
                _enable_v2(path)
        _sweep(parents, version)
        trial = Support(version=version, parents=parents)
        trial.create(memory_mb=64, processes=8).remove(wait_s=1.0)
    except OSError as exc:
        return Support(version=version, reason=f"cgroup v{version} not writable here "
                       f"({exc.strerror or exc}: {getattr(exc, 'filename', '')})")
    return Support(version=version, parents=parents)


def _enable_v2(path: Path) -> None:
    """Give ``memory`` and ``pids`` to the children of ``path`` (and of its parent,
    the daemon's own cgroup)."""
    for where in (path.parent, path):
        control = where / "cgroup.subtree_control"
        have = set(control.read_text().split())
        missing = [f"+{c}" for c in ("memory", "pids") if c not in have]
        if not missing:
            continue
        try:
            control.write_text(" ".join(missing))
        except OSError as exc:
            # EBUSY: the daemon's cgroup holds processes, so its children may not
            # have controllers (v2's rule). A delegated cgroup holding the daemon
            # alone (systemd ``Delegate=yes``) moves it to a leaf of its own; one
            # shared with other processes is left alone.
            if exc.errno != errno.EBUSY or where != path.parent:
                raise
            procs = (where / "cgroup.procs").read_text().split()
            if procs != [str(os.getpid())]:
                raise
            leaf = where / "daemon"
            leaf.mkdir(exist_ok=True)
            (leaf / "cgroup.procs").write_text(str(os.getpid()))
            control.write_text(" ".join(missing))


def _sweep(parents: dict[str, Path], version: int) -> None:
    """End what a dead daemon's sandboxes left and remove their cgroups (a live
    daemon's are left alone).

    A sandbox outlives its daemon's death when a process of it left its process group
    (``setsid``) or killed the watchdog above it, or when the daemon died as the
    watchdog forked the command (coreutils' ``timeout`` ends without passing on a
    signal that comes before it has noted its child's pid): everything in its cgroup
    is killed here, at the next start, rather than left running for good."""
    deadline = time.monotonic() + _SWEEP_WAIT_S
    for parent in parents.values():
        with contextlib.suppress(OSError):
            for entry in parent.iterdir():
                owner = entry.name[1:].split("-", 1)[0]
                if not entry.name.startswith("s") or not owner.isdigit() or \
                        Path(f"/proc/{owner}").exists():
                    continue
                left = Cgroup(version=version, dirs=[entry], memory_mb=0)
                pids = left.pids()
                # One attempt each once the time is up: a start is never held long
                # (what would not go is left for the next one).
                if left.remove(wait_s=max(0.0, deadline - time.monotonic())) and pids:
                    log.warning("killed %d process(es) the sandbox cgroup %s of a dead "
                                "daemon (pid %s) still held", len(pids), entry, owner)


@dataclass
class Cgroup:
    """One sandbox's cgroup: a directory per hierarchy (v1) or one (v2)."""

    version: int
    dirs: list[Path]
    memory_mb: int
    _procs: list[int] = field(default_factory=list)
    _oom_at_removal: int = 0

    def _file(self, name: str) -> Path | None:
        for path in self.dirs:
            if (path / name).exists():
                return path / name
        return None

    def configure(self, processes: int) -> None:
        limit = str(self.memory_mb * 1024 * 1024)
        if self.version == 1:
            self._write("memory.limit_in_bytes", limit)
            # Swap counts too where the kernel accounts it (memory + swap = limit).
            self._write("memory.memsw.limit_in_bytes", limit, optional=True)
        else:
            self._write("memory.max", limit)
            self._write("memory.swap.max", "0", optional=True)
        self._write("pids.max", str(processes))

    def _write(self, name: str, value: str, *, optional: bool = False) -> None:
        path = self._file(name)
        if path is None:
            if optional:
                return
            raise OSError(2, "no such cgroup file", name)
        path.write_text(value)

    def open_procs(self) -> list[int]:
        """Descriptors the child joins through, opened before the fork: it writes
        ``0`` to each (itself) while still root, before it drops its uid.

        Under v1 that is ``tasks``, not ``cgroup.procs``: the kernel moves the
        writing thread alone without taking its global thread-group lock, whose
        RCU grace period cost 7-10 ms per move here; a child between fork and
        exec has one thread, so the whole process moves."""
        self.close_procs()
        name = "tasks" if self.version == 1 else "cgroup.procs"
        for path in self.dirs:
            self._procs.append(os.open(path / name, os.O_WRONLY | os.O_CLOEXEC))
        return list(self._procs)

    def close_procs(self) -> None:
        for fd in self._procs:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._procs = []

    def oom_kills(self) -> int:
        """How many processes the kernel killed at the memory cap so far (what it
        was at removal, once removed)."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        path = self._file(name)
        if path is None:
            return self._oom_at_removal
        with contextlib.suppress(OSError, ValueError):
            for line in path.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def pids(self) -> list[int]:
        found: set[int] = set()
        for path in self.dirs:
            with contextlib.suppress(OSError, ValueError):
                found.update(int(p) for p in (path / "cgroup.procs").read_text().split())
        return sorted(found)

    def try_remove(self) -> bool:
        """One attempt: kill what is left, remove the directories; False while a
        process is still on its way out. Cheap (cgroupfs is in memory): the event
        loop may call it, and leave the waiting to :meth:`remove` in a thread."""
        self.close_procs()
        kill = self._file("cgroup.kill")
        if kill is not None:
            with contextlib.suppress(OSError):
                kill.write_text("1")
        for pid in self.pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self._oom_at_removal = max(self._oom_at_removal, self.oom_kills())
        left = []
        for path in self.dirs:
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                left.append(path)
        self.dirs = left
        return not left

    def remove(self, *, wait_s: float = 2.0) -> bool:
        """Kill what is left in it and remove it, waiting up to ``wait_s`` for the
        processes to go (blocking: call it in a thread). False when one would not
        (the directory is left; a later start sweeps it)."""
        deadline = time.monotonic() + wait_s
        while not self.try_remove():
            if time.monotonic() > deadline:
                log.warning("sandbox cgroup %s still busy; left for the next start",
                            self.dirs[0])
                return False
            time.sleep(0.01)
        return True
