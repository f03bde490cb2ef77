"""Workspaces in time: snapshots in the log, and files restored with the session.

An agent's workspace is snapshotted (:class:`~agentd.sandbox.snapshots.SnapshotStore`,
content-addressed and incremental) before the first step of a session that may change
it, and after every step whose tools may have changed it; each snapshot that differs
from the session's last is a ``workspace.snapshot`` event committed with the step's
results. So the files that go with any point of a session's log are the last snapshot
at or before it (or, before the session's first, that first one: nothing changed the
files in between).

Restoring a session to a checkpoint or seq, or forking one, puts the workspace back to
the files of that point, and logs ``workspace.restored`` (what was written and removed).
The workspace is the agent's, shared by its sessions: restoring one session's files
changes them for every session of the agent, which is why the event says so.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

import orjson

from agentd.errors import AgentdError
from agentd.sandbox.snapshots import SnapshotStore
from agentd.store import NewEvent
from agentd.store.records import EventRecord, live_events

__all__ = ["WorkspaceKeeper", "snapshot_at"]

log = logging.getLogger(__name__)


def snapshot_at(events: list[EventRecord], seq: int) -> str | None:
    """The workspace ref of a session's state at ``seq`` (``events``: its whole log)."""
    live = live_events([e for e in events if e.seq <= seq])
    refs = [e.data["ref"] for e in live
            if e.kind == "workspace.snapshot" and e.data.get("ref")]
    if refs:
        return str(refs[-1])
    later = [e.data["ref"] for e in events
             if e.seq > seq and e.kind == "workspace.snapshot" and e.data.get("ref")]
    return str(later[0]) if later else None


class WorkspaceKeeper:
    """The daemon's snapshot store and what the runtime does with it."""

    def __init__(self, root: Path, *, max_bytes: int) -> None:
        self.store = SnapshotStore(root, max_bytes=max_bytes)
        # One snapshot or restore of a workspace at a time.
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, agent_id: str) -> asyncio.Lock:
        return self._locks.setdefault(agent_id, asyncio.Lock())

    async def snapshot(self, agent_id: str, workspace: Path, last_ref: str | None, *,
                       check: bool = False, tainted: str | None = None) -> list[NewEvent]:
        """A ``workspace.snapshot`` event if the files differ from ``last_ref``.

        Provenance: every snapshot the agent's own steps produce is remembered with
        whether the session was tainted then. ``check`` (before a run's first tool
        step) looks at files that changed since the session's last snapshot: a state
        the agent's tools never produced was changed from outside, and one produced
        while a session was tainted carries that taint; either way the event says
        ``tainted`` and the session is tainted from then on.
        """
        async with self._lock(agent_id):
            try:
                ref, stats = await asyncio.to_thread(self.store.snapshot, workspace,
                                                     cache_key=agent_id)
            except AgentdError as exc:
                log.warning("workspace of agent %s not snapshotted: %s", agent_id,
                            exc.message)
                return [NewEvent(kind="workspace.snapshot",
                                 data={"ref": None, "error": exc.to_dict()})]
            if ref == last_ref:
                return []
            marks = await asyncio.to_thread(self._marks, agent_id)
            known = marks.get(ref)
            why: str
            if check:
                why = known if known is not None else (
                    "files in the workspace were changed outside the agent's tools"
                    if stats.files else "")
            else:
                # Written by this step: as trusted as the session and what it started from.
                why = tainted or marks.get(last_ref or "") or ""
            if known is None or (not known and why):  # a taint is never forgotten
                marks[ref] = why
                await asyncio.to_thread(self._save_marks, agent_id, marks)
        return [NewEvent(kind="workspace.snapshot", data={
            "ref": ref, "files": stats.files, "bytes": stats.bytes,
            "hashed_bytes": stats.hashed_bytes, "new_bytes": stats.new_bytes,
            "ms": round(stats.duration_ms, 3),
            **({"tainted": why} if check and why else {}),
            **({"skipped": stats.skipped[:20]} if stats.skipped else {})})]

    def _marks_path(self, agent_id: str) -> Path:
        return self.store.root / "provenance" / f"{agent_id}.json"

    def _marks(self, agent_id: str) -> dict[str, str]:
        """Snapshot ref -> why its content is untrusted ("" for the agent's own)."""
        try:
            return dict(orjson.loads(self._marks_path(agent_id).read_bytes()))
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError):
            log.warning("provenance of agent %s unreadable; starting afresh", agent_id)
            return {}

    def _save_marks(self, agent_id: str, marks: dict[str, str]) -> None:
        path = self._marks_path(agent_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(".tmp")
        temp.write_bytes(orjson.dumps(marks))
        os.replace(temp, path)

    async def restore(self, agent_id: str, workspace: Path, ref: str | None
                      ) -> dict[str, Any]:
        """Put the workspace back to ``ref``; the ``workspace.restored`` event's data."""
        if ref is None:
            return {"ref": None, "note": "no snapshot of the workspace in this session: "
                                         "its files were left as they are"}
        started = time.perf_counter()
        async with self._lock(agent_id):
            try:
                stats = await asyncio.to_thread(self.store.restore, ref, workspace,
                                                cache_key=agent_id)
            except AgentdError as exc:
                log.error("workspace of agent %s not restored to %s: %s", agent_id, ref,
                          exc.message)
                return {"ref": ref, "error": exc.to_dict()}
        return {"ref": ref, "written": stats.written, "removed": stats.removed,
                "unchanged": stats.unchanged,
                "ms": round((time.perf_counter() - started) * 1000, 3),
                "shared": "the workspace is the agent's: every session of it sees these "
                          "files"}

    async def collect(self, keep: set[str], *, min_age_s: float = 3600.0) -> int:
        """Drop snapshot objects no log refers to (young ones are kept: their events may
        be on their way to the store)."""
        return await asyncio.to_thread(self.store.gc, keep, min_age_s=min_age_s)
