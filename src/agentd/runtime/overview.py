"""The daemon at a glance: what ``GET /v1/overview`` answers (the console's overview).

Every figure is one the runtime can tell cheaply, so a page may ask every few seconds
with ten thousand agents: agents by state (one grouped count) and how many are awake on
this node (in memory), active runs by status (the partial index of active runs), the
runs and model calls this node holds, today's usage (the ledger's rows of one day), and
the store's size (SQLite's page count, PostgreSQL's relation sizes), and the runs under
way on this node with what each is doing now (``busy``: in memory, at most ``BUSY_MAX``).

Disk in use by workspaces and snapshots is the one figure that means walking files, so
it is measured in a worker thread when asked for and at most every ``DISK_TTL_S``; a
request never waits for it and gets the last measurement (``null`` before the first one
ends) with the time it was taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentd.store import Store
from agentd.store.agents_query import AGENT_STATES
from agentd.store.records import AgentRecord, iso

__all__ = ["BUSY_MAX", "DISK_TTL_S", "DiskGauge", "Overview", "disk_usage"]

log = logging.getLogger(__name__)

#: How old a disk measurement may be before a request starts another.
DISK_TTL_S = 30.0
#: The most runs ``busy`` lists (those under way longest first).
BUSY_MAX = 500
#: The usage ledger's sums, as today's usage shows them.
_USAGE_SUMS = ("calls", "input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens",
               "cost_usd")


def disk_usage(root: Path) -> tuple[int, int]:
    """(bytes on disk, files) under ``root``: allocated blocks, each inode counted once
    (hard links), symbolic links not followed; (0, 0) when it does not exist."""
    total = files = 0
    seen: set[tuple[int, int]] = set()
    stack = [str(root)]
    while stack:
        current = stack.pop()
        try:
            entries = os.scandir(current)
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(info.st_mode):
                    stack.append(entry.path)
                    continue
                if info.st_nlink > 1:
                    key = (info.st_dev, info.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                total += info.st_blocks * 512
                files += 1
    return total, files


@dataclass(kw_only=True, slots=True)
class _Measured:
    workspaces_bytes: int
    workspaces_files: int
    snapshots_bytes: int
    at: float


class DiskGauge:
    """Disk in use by workspaces and snapshots, measured off the loop on demand."""

    def __init__(self, workspaces: Path, snapshots: Path | None, *,
                 ttl_s: float = DISK_TTL_S,
                 measure: Callable[[Path], tuple[int, int]] = disk_usage) -> None:
        self.workspaces = workspaces
        self.snapshots = snapshots
        self.ttl_s = ttl_s
        self._measure = measure
        self._last: _Measured | None = None
        self._task: asyncio.Task[None] | None = None

    def _walk(self) -> _Measured:
        ws_bytes, ws_files = self._measure(self.workspaces)
        snap_bytes = self._measure(self.snapshots)[0] if self.snapshots is not None else 0
        return _Measured(workspaces_bytes=ws_bytes, workspaces_files=ws_files,
                         snapshots_bytes=snap_bytes, at=time.time())

    async def _refresh(self) -> None:
        try:
            self._last = await asyncio.to_thread(self._walk)
        except Exception:
            log.exception("could not measure the workspaces' disk use")

    def read(self) -> dict[str, Any]:
        """The last measurement; starts a new one when it is older than the TTL."""
        last = self._last
        stale = last is None or time.time() - last.at >= self.ttl_s
        if stale and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._refresh(), name="agentd-disk-gauge")
        if last is None:
            return {"workspaces_bytes": None, "workspaces_files": None,
                    "snapshots_bytes": None, "measured_at": None}
        return {"workspaces_bytes": last.workspaces_bytes,
                "workspaces_files": last.workspaces_files,
                "snapshots_bytes": last.snapshots_bytes, "measured_at": iso(last.at)}

    async def wait(self) -> None:
        """Let a measurement under way finish (tests, shutdown)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Overview:
    """Assembles the overview from the services that know each part."""

    def __init__(self, store: Store, *, awake: Callable[[], int],
                 node: Callable[[], dict[str, int]], sandbox: Callable[[], str],
                 disk: DiskGauge,
                 usage: Callable[[str], Awaitable[list[dict[str, Any]]]],
                 busy: Callable[[], list[dict[str, Any]]] = list) -> None:
        self.store = store
        self._busy = busy
        self._awake = awake
        self._node = node
        self._sandbox = sandbox
        self.disk = disk
        self._usage = usage

    async def of_agents(self, agents: Sequence[AgentRecord],
                        is_awake: Callable[[str], bool],
                        usage_row: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The parts of the summary that are about agents, for ``agents`` only (a
        token's scope): agents by state and awake, their active runs, approvals
        waiting, and today's usage of the ledger rows ``usage_row`` keeps (each names
        its agent and tenant). The rest of the summary is the daemon's own."""
        now = time.time()
        day = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
        runs, usage = await asyncio.gather(
            self.store.active_run_counts([a.id for a in agents]),
            self.store.usage_report(group_by=["agent", "tenant"], since=day, until=day))
        by_state = dict.fromkeys(AGENT_STATES, 0)
        for agent in agents:
            by_state[agent.state] = by_state.get(agent.state, 0) + 1
        awake = sum(1 for a in agents if is_awake(a.name))
        rows = [r for r in usage if usage_row(r)]
        today = {k: sum(r[k] for r in rows) for k in _USAGE_SUMS}
        today["cost_usd"] = round(float(today["cost_usd"]), 6)
        return {
            "agents": {"total": len(agents), "by_state": by_state, "awake": awake,
                       "asleep": len(agents) - awake},
            "runs": runs,
            "approvals_waiting": runs["waiting_approval"],
            "usage_today": {"day": day, **today},
        }

    def busy(self, agents: Collection[str] | None = None) -> list[dict[str, Any]]:
        """The runs under way on this node, of ``agents`` only (names; None: all), each
        with what it is doing now (``RunExecutor.activity``): the longest under way
        first, at most ``BUSY_MAX``."""
        rows = [r for r in self._busy() if agents is None or r["agent"] in agents]
        rows.sort(key=lambda r: (r["started_at"] or "", r["run"]))
        return rows[:BUSY_MAX]

    async def summary(self) -> dict[str, Any]:
        now = time.time()
        day = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
        counts, usage = await asyncio.gather(self.store.overview_counts(), self._usage(day))
        by_state: dict[str, int] = counts["agents"]
        total = sum(by_state.values())
        awake = min(self._awake(), total)
        runs: dict[str, int] = counts["runs"]
        today = dict(usage[0]) if usage else {}
        return {
            "agents": {"total": total, "by_state": by_state, "awake": awake,
                       "asleep": total - awake},
            "runs": runs,
            "approvals_waiting": runs["waiting_approval"],
            "node": self._node(),
            "usage_today": {"day": day, **{k: today.get(k, 0) for k in _USAGE_SUMS}},
            "sandbox": {"backend": self._sandbox(), **self.disk.read()},
            "store": {"dialect": self.store.dialect, "synchronous": self.store.synchronous,
                      "bytes": counts["bytes"]},
            "busy": self.busy(),
            "at": iso(now),
        }
