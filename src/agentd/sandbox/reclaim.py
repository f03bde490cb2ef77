"""Sweeping sandbox uids whose agents were deleted, on this host, before they are given
again (``agentd.runtime.sandboxes``; the rows: ``agentd.store._uids``).

What an agent's uid can leave behind on a host where everything that ran as it kept
the host read-only (bubblewrap, gVisor, the process backend and browsers under
:mod:`agentd.sandbox.hostfs`): processes (a background job, a process that left its
process group, a browser or shell of a node that did not delete the agent), SysV IPC
objects of the host's namespace (a browser's), and its workspace on this node. Each is
removed here; blocking (call it in a thread), as root.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

__all__ = ["processes_of", "sweep"]

log = logging.getLogger(__name__)

_KILL_ROUNDS = 20
_IPC = (("shm", "-m"), ("msg", "-q"), ("sem", "-s"))


def processes_of(uids: Iterable[int]) -> dict[int, list[int]]:
    """Live (not zombie) processes with any of ``uids`` as real, effective, saved or
    filesystem uid, by uid."""
    wanted = set(uids)
    found: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as status:
                text = status.read()
        except OSError:
            continue  # (gone meanwhile)
        state = ids = None
        for line in text.split(b"\n"):
            if line.startswith(b"State:"):
                state = line.split()[1:2]
            elif line.startswith(b"Uid:"):
                ids = {int(x) for x in line.split()[1:]}
        if ids is None or state == [b"Z"]:
            continue
        for uid in ids & wanted:
            found.setdefault(uid, []).append(int(name))
    return found


def _kill_all(uid: int) -> None:
    """SIGKILL every process of ``uid`` at once: ``kill -KILL -1`` run as that uid
    (the kernel signals each process it may, under its task list lock, so one that
    forks meanwhile is caught with its child; a process with a fatal signal pending
    cannot fork)."""
    kill = shutil.which("kill", path="/usr/bin:/bin") or "kill"
    subprocess.run([kill, "-KILL", "-1"], user=uid, group=uid, extra_groups=[], env={},
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, close_fds=True, timeout=30, check=False)


def _ipc_of(uids: set[int]) -> list[tuple[str, str]]:
    """SysV IPC objects (``ipcrm`` flag, id) owned or created by one of ``uids``."""
    out = []
    for kind, flag in _IPC:
        with contextlib.suppress(OSError), open(f"/proc/sysvipc/{kind}") as table:
            header = table.readline().split()
            cols = {name: i for i, name in enumerate(header)}
            for line in table:
                fields = line.split()
                owners = {int(fields[cols[c]]) for c in ("uid", "cuid") if c in cols}
                if owners & uids:
                    out.append((flag, fields[cols["shmid" if kind == "shm" else
                                                     "msqid" if kind == "msg" else
                                                     "semid"]]))
    return out


def sweep(uids: Iterable[int], workspaces: Iterable[Path] = ()) -> set[int]:
    """Kill every process of ``uids``, remove their SysV IPC objects and the
    ``workspaces`` their agents left on this host. Returns the uids swept clean (a
    uid with a process that would not die is left out: it stays quarantined)."""
    wanted = set(uids)
    alive = processes_of(wanted)
    for _ in range(_KILL_ROUNDS):
        if not alive:
            break
        for uid in alive:
            _kill_all(uid)
        alive = processes_of(alive)
    for uid, pids in alive.items():
        log.warning("sandbox uid %d: processes %s survived SIGKILL; it is not given again "
                    "for now", uid, pids[:10])
    clean = wanted - set(alive)
    if _ipc_of(clean):
        ipcrm = shutil.which("ipcrm", path="/usr/bin:/bin")
        if ipcrm is not None:
            args = [item for flag, ident in _ipc_of(clean) for item in (flag, ident)]
            subprocess.run([ipcrm, *args], env={}, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=30, check=False)
        left = {uid for uid in clean if _ipc_of({uid})}
        if left:
            log.warning("sandbox uids %s: SysV IPC objects remain (no ipcrm, or it "
                        "failed); not given again for now", sorted(left)[:10])
            clean -= left
    for workspace in workspaces:
        shutil.rmtree(workspace, ignore_errors=True)
    return clean
