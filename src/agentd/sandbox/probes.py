"""The process backend's probes, each tried once per process (blocking): whether its
commands get a network namespace, a private mount namespace showing the workspace
through a closed parent (`Reach`), and a read-only host (`Sealed`)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentd.sandbox import hostfs as _hostfs
from agentd.sandbox.limits import (
    SANDBOX_GID,
    SANDBOX_PATH,
    SANDBOX_UID,
    Limits,
    Reach,
    Sealed,
    closed_parent,
    reach,
    spawn_kwargs,
)

__all__ = ["netns_known", "netns_probe", "reach_for", "seal_probe"]

logger = logging.getLogger("agentd.sandbox.backends")

_probe_lock = threading.Lock()


def netns_probe() -> str | None:
    """None when commands get a network namespace of their own here, else why not."""
    pid = os.getpid()
    cached = _netns_probes.get(pid)
    if cached is None:
        with _probe_lock:
            cached = _netns_probes.get(pid)
            if cached is None:
                cached = _netns_probes[pid] = _probe_netns()
    return cached[0]


_netns_probes: dict[int, tuple[str | None]] = {}


def netns_known() -> bool:
    """Whether :func:`netns_probe` has its answer (it then does not block)."""
    return os.getpid() in _netns_probes


def _probe_netns() -> tuple[str | None]:
    true = shutil.which("true", path=SANDBOX_PATH)
    if true is None:
        return ("true not found on the sandbox PATH",)
    try:
        done = subprocess.run([true], env={}, capture_output=True, timeout=30,
                              check=False, **spawn_kwargs(Limits(), new_net=True))
    except (OSError, subprocess.SubprocessError) as exc:
        return (f"no network namespace: {exc}",)
    if done.returncode != 0:
        return (f"no network namespace: true exited with {done.returncode}",)
    return (None,)


_reach_probes: dict[int, str | None] = {}


def reach_for(workspace: Path, ids: tuple[int, int], parts: list[str], limits: Limits
               ) -> Reach | Sealed | None:
    real = Path(os.path.realpath(workspace))
    cover = closed_parent(real, ids)
    if seal_probe() is None:
        seal = _hostfs.plan([str(real)], tmp_bytes=limits.file_size_mb << 20,
                            cover=None if cover is None else str(cover))
        return Sealed(seal=seal, workspace=str(real), cwd=tuple(parts))
    if cover is None or _reach_probe() is not None:
        return None
    return reach(real, cover, parts)


_seal_probes: dict[int, str | None] = {}


def _once(cache: dict[int, str | None], probe: Callable[[], str | None]) -> str | None:
    """``probe()``'s answer, tried once per process (a forked worker tries again)."""
    pid = os.getpid()
    if pid in cache:
        return cache[pid]
    with _probe_lock:
        if pid not in cache:
            cache[pid] = probe()
        return cache[pid]


def _run_true(kwargs: dict[str, Any]) -> str | None:
    """Why ``true`` could not run with these spawn arguments (None: it ran)."""
    true = shutil.which("true", path=SANDBOX_PATH)
    try:
        done = subprocess.run([true or "true"], env={}, capture_output=True, timeout=30,
                              check=False, **kwargs)
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    return None if done.returncode == 0 else f"true exited with {done.returncode}"


def seal_probe() -> str | None:
    """None when a command can be given a `Sealed` filesystem here (a private mount
    namespace, ``mount_setattr``, as root), else why not; tried once per process."""
    def probe() -> str | None:
        with tempfile.TemporaryDirectory(prefix="agentd-seal-") as tmp:
            real = os.path.realpath(tmp)
            if os.geteuid() == 0:
                os.chown(real, SANDBOX_UID, SANDBOX_GID)  # (the probe runs as nobody)
            sealed = Sealed(seal=_hostfs.plan([real], tmp_bytes=1 << 20), workspace=real)
            failed = _run_true(spawn_kwargs(Limits(), sealed=sealed))
        why = None if failed is None else f"no read-only host: {failed}"
        if why is not None and os.geteuid() == 0:
            logger.warning("process backend: commands see the host's filesystem writable "
                           "where their uid may write (%s): the uids of deleted agents "
                           "that ran here are never given again", why)
        return why

    return _once(_seal_probes, probe)


def _reach_probe() -> str | None:
    """None when a command can be given a `Reach` here (a private mount namespace
    and a ``tmpfs`` in it, as root), else why not; tried once per process."""
    def probe() -> str | None:
        with tempfile.TemporaryDirectory(prefix="agentd-reach-") as tmp:
            closed = Path(tmp) / "closed"
            inner = closed / "ws"
            inner.mkdir(parents=True)
            closed.chmod(0o700)
            failed = _run_true(spawn_kwargs(Limits(), reach=reach(inner, closed)))
        why = None if failed is None else f"no private mount namespace: {failed}"
        if why is not None:
            logger.warning("process backend: commands cannot be shown their workspace's "
                           "path through a closed parent (%s): they work in it by relative "
                           "paths only, and the git tool fails", why)
        return why

    return _once(_reach_probes, probe)
