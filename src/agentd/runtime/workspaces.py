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

Provenance (taint) is kept per workspace, not per session, because the files are:

- every snapshot ref is remembered with why its content is untrusted ("" for content
  only the agent's untainted steps wrote); the workspace's *current* content has a
  taint too, and a snapshot inherits it (what a tainted session wrote is still there
  until a restore puts back a state known to be clean);
- a tainted session taints the workspace *before* its tools may write, so a snapshot
  that another session takes meanwhile is tainted, and a snapshot that fails (too deep,
  too large, over budget, disk full) cannot lose the mark: failure fails closed;
- a session that was clean when its step began but ends it tainted (a command whose
  output came from outside) taints, after the fact, every snapshot other sessions took
  while its step ran; a clean session finds out at its next step (:meth:`SessionWorkspace.
  needs_check`) and is tainted before its calls are judged;
- extended attributes and special files (FIFOs, sockets, devices) are not kept by a
  snapshot, so a state holding any is untrusted whoever wrote it;
- a check (before a run's first step, and before any later step once the workspace
  moved or is tainted) that cannot snapshot the workspace taints the session.

In a cluster (a shared snapshot store: :mod:`agentd.sandbox.snapshot_objects`), each
node keeps its own copy of a workspace and its own provenance record, and every
snapshot is copied to the shared store with its mark before its event is returned
(so before it is committed). The store records the agent's *head*, its last committed
files and the node that committed them, with the event. Before a run starts on a node
whose copy is not at a head another node committed, :meth:`WorkspaceKeeper.follow`
fetches the snapshot, restores it, and takes its mark from the shared store (none
found: untrusted); the provenance record's ``head`` is the marker of which snapshot
this node's copy is at. A snapshot taken while another session's step may be writing
is marked untrusted in the shared store, since that step may yet end tainted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import orjson

from agentd.config import SandboxConfig
from agentd.errors import AgentdError, NotFound, StoreError
from agentd.events import (
    ErrorData,
    WorkspaceRestoredData,
    WorkspaceSnapshot,
    WorkspaceSnapshotData,
)
from agentd.events.data import QuotaData
from agentd.sandbox.snapshot_objects import (
    DirObjects,
    ObjectMissing,
    SnapshotObjects,
    StoreObjects,
    pull_manifest,
    pull_snapshot,
    push_snapshot,
)
from agentd.sandbox.snapshots import SnapshotStats, SnapshotStore
from agentd.sandbox.workspace import set_usage
from agentd.store import NewEvent, Store, WorkspaceHead
from agentd.store.records import EventRecord, live_events

if TYPE_CHECKING:
    from agentd.runtime.history import SessionHistory

__all__ = ["SessionWorkspace", "WorkspaceKeeper", "manifest_changes", "shared_snapshots",
           "snapshot_at", "snapshot_before"]

log = logging.getLogger(__name__)


def snapshot_at(events: list[EventRecord], seq: int) -> str | None:
    """The workspace ref of a session's state at ``seq`` (``events``: its whole log)."""
    live = live_events([e for e in events if e.seq <= seq])
    refs = [ref for e in live if (ref := _snapshot_ref(e))]
    if refs:
        return refs[-1]
    later = [ref for e in events if e.seq > seq and (ref := _snapshot_ref(e))]
    return later[0] if later else None


def snapshot_before(events: list[EventRecord], seq: int) -> str | None:
    """The session's last snapshot before ``seq`` (restores applied), or None: what a
    snapshot at ``seq`` changed is its difference from this one."""
    refs = [ref for e in live_events([e for e in events if e.seq < seq])
            if (ref := _snapshot_ref(e))]
    return refs[-1] if refs else None


def manifest_changes(old: dict[str, Any], new: dict[str, Any], *, limit: int = 1000
                     ) -> dict[str, Any]:
    """What differs between two snapshots' manifests (path -> entry): ``{"changes":
    [{"path", "change": added|removed|modified, "type", "size"?}], "counts",
    "truncated"}``, paths in order, at most ``limit`` changes listed (all counted)."""
    changes: list[dict[str, Any]] = []
    counts = {"added": 0, "removed": 0, "modified": 0}
    for path in sorted(old.keys() | new.keys()):
        before, after = old.get(path), new.get(path)
        if before == after:
            continue
        change = "added" if before is None else "removed" if after is None else "modified"
        counts[change] += 1
        if len(changes) < limit:
            entry = after if after is not None else before
            assert entry is not None
            item: dict[str, Any] = {"path": path, "change": change, "type": entry["type"]}
            if entry.get("size") is not None:
                item["size"] = entry["size"]
            changes.append(item)
    return {"changes": changes, "counts": counts,
            "truncated": sum(counts.values()) > len(changes)}


def _snapshot_ref(event: EventRecord) -> str | None:
    typed = event.typed
    return typed.data.get("ref") if isinstance(typed, WorkspaceSnapshot) else None


@dataclass
class _Provenance:
    """An agent's provenance file (``provenance/<agent>.json`` in the store)."""

    #: Snapshot ref -> why its content is untrusted ("" for the agent's own).
    marks: dict[str, str] = field(default_factory=dict)
    #: The workspace's last known state, and why its content is untrusted.
    head: str | None = None
    taint: str = ""
    #: Bytes of new content the agent's snapshots stored (its snapshot budget's use).
    stored: int = 0

    @classmethod
    def of(cls, raw: Any) -> _Provenance:
        if not isinstance(raw, dict):
            return cls()
        if "marks" not in raw:  # the first format: marks alone
            return cls(marks={str(k): str(v) for k, v in raw.items()})
        return cls(marks={str(k): str(v) for k, v in dict(raw["marks"]).items()},
                   head=raw.get("head"), taint=str(raw.get("taint") or ""),
                   stored=int(raw.get("stored") or 0))

    def mark(self, ref: str, why: str) -> None:
        if not self.marks.get(ref):  # a taint is never forgotten
            self.marks[ref] = why


def _unkept(stats: SnapshotStats) -> str:
    """Why a state is untrusted whoever wrote it: what the snapshot could not keep."""
    parts = []
    if stats.xattrs:
        parts.append("extended attributes on " + ", ".join(stats.xattrs[:5]))
    if stats.skipped:
        parts.append("special or unreadable files " + ", ".join(stats.skipped[:5]))
    if not parts:
        return ""
    return ("the workspace holds what a snapshot cannot keep (" + "; ".join(parts)
            + "): its provenance is unknown")


#: Reads an agent's workspace head (``Store.workspace_head``).
HeadReader = Callable[[str], Awaitable[WorkspaceHead | None]]


def shared_snapshots(config: SandboxConfig, store: Store) -> SnapshotObjects | None:
    """Where every node reads snapshots, as ``[sandbox] snapshot_store`` says (None:
    ``local``, each node its own)."""
    kind = config.snapshots_shared(store.dialect)
    if kind == "store":
        return StoreObjects(store)
    if kind == "path":
        assert config.snapshot_path is not None  # (the config's check)
        return DirObjects(config.snapshot_path)
    return None


class WorkspaceKeeper:
    """The daemon's snapshot store and what the runtime does with it.

    Args:
        root: this node's snapshot store (``$AGENTD_HOME/snapshots``).
        max_bytes: a workspace larger than this is not snapshotted.
        shared: where every node reads snapshots (None: ``snapshot_store = "local"``:
            each node keeps its own, and no workspace follows a run to another node).
        node_id: this node (the workspace heads it committed are its own).
        heads: reads an agent's workspace head (needed with ``shared``).
    """

    def __init__(self, root: Path, *, max_bytes: int, shared: SnapshotObjects | None = None,
                 node_id: str = "", heads: HeadReader | None = None) -> None:
        self.store = SnapshotStore(root, max_bytes=max_bytes)
        self.shared = shared if heads is not None else None
        self.node_id = node_id
        self._heads = heads
        #: The last ``taken_at`` given (strictly increasing on this node).
        self._taken = 0.0
        #: agent -> (when read, monotonic; the node that committed its head): what
        #: :meth:`elsewhere` answers from for a while.
        self._nodes: dict[str, tuple[float, str | None]] = {}
        #: Figures for /health and the benchmarks.
        self.followed = 0
        self.pushed_bytes = 0
        self.pulled_bytes = 0
        # One snapshot or restore of a workspace at a time.
        self._locks: dict[str, asyncio.Lock] = {}
        self._provenance: dict[str, _Provenance] = {}
        #: agent -> session -> refs other sessions took while that session's step
        #: (which may write) runs: tainted after the fact if the step ends tainted.
        self._writers: dict[str, dict[str, set[str]]] = {}
        #: agent -> session -> why, for those of the writers tainted when they began.
        self._tainted_writers: dict[str, dict[str, str]] = {}

    def _lock(self, agent_id: str) -> asyncio.Lock:
        return self._locks.setdefault(agent_id, asyncio.Lock())

    async def _load(self, agent_id: str) -> _Provenance:
        prov = self._provenance.get(agent_id)
        if prov is None:
            prov = self._provenance[agent_id] = await asyncio.to_thread(
                self._read_provenance, agent_id)
        return prov

    def taint_of(self, agent_id: str, ref: str | None) -> str | None:
        """Why the workspace (or the snapshot ``ref``) is untrusted, from memory; None
        when it is not known yet (nothing loaded)."""
        prov = self._provenance.get(agent_id)
        if prov is None:
            return None
        return prov.taint or prov.marks.get(ref or "", "")

    def moved(self, agent_id: str, ref: str | None) -> bool:
        """Whether the workspace is (or may be) at another state than ``ref``."""
        prov = self._provenance.get(agent_id)
        return prov is None or prov.head != ref

    async def writing(self, agent_id: str, session_id: str, tainted: str | None) -> None:
        """A step of ``session_id`` that may write is about to run."""
        async with self._lock(agent_id):
            self._writers.setdefault(agent_id, {}).setdefault(session_id, set())
            if tainted:
                self._tainted_writers.setdefault(agent_id, {})[session_id] = tainted
                prov = await self._load(agent_id)
                if not prov.taint:
                    prov.taint = f"written while a session was tainted ({tainted})"
                    await self._save(agent_id, prov)

    async def written(self, agent_id: str, session_id: str, tainted: str | None) -> None:
        """The step is over (its snapshot taken or not)."""
        async with self._lock(agent_id):
            prov = await self._load(agent_id)
            if self._end_write(agent_id, session_id, tainted, prov):
                await self._save(agent_id, prov)

    def _end_write(self, agent_id: str, session_id: str, tainted: str | None,
                   prov: _Provenance) -> bool:
        """Forget the writer; if it ended tainted, taint what others took meanwhile
        and the workspace. Whether ``prov`` changed."""
        seen = self._writers.get(agent_id, {}).pop(session_id, None)
        self._tainted_writers.get(agent_id, {}).pop(session_id, None)
        if seen is None or not tainted:
            return False
        why = f"written while a session was tainted ({tainted})"
        for ref in seen:
            prov.mark(ref, why)
        prov.taint = prov.taint or why
        return True

    def _taken_at(self) -> float:
        self._taken = max(time.time(), self._taken + 1e-6)
        return round(self._taken, 6)

    # complexity: one snapshot with every way its trust is decided (a check before a
    # step, a step's own writes, what another session wrote meanwhile), kept together.
    async def snapshot(self, agent_id: str, workspace: Path, last_ref: str | None, *,
                       session_id: str = "", check: bool = False,
                       tainted: str | None = None, budget_bytes: int | None = None,
                       quota_bytes: int | None = None, scope: str = "default"
                       ) -> list[NewEvent]:
        """A ``workspace.snapshot`` event if the files differ from ``last_ref`` (or
        the session, clean so far, must learn that they are untrusted).

        ``check`` (before a step): the files as they are now: a state the agent's
        tools never produced was changed from outside; one that is tainted taints
        the session (the event says ``tainted``). Without ``check`` (after a step of
        ``session_id`` that may have written), the new state is as trusted as the
        session and the workspace it started from, and the step is over.

        With a shared snapshot store, the snapshot and its mark are copied there
        (under ``scope``, the agent's tenant) before this returns: a ref committed to
        a log can be restored on any node. A copy that fails is a snapshot that
        failed (the event has no ref, and the writer's taint stays).
        """
        async with self._lock(agent_id):
            prov = await self._load(agent_id)
            budget = (None if budget_bytes is None
                      else max(budget_bytes - prov.stored, 0))
            try:
                ref, stats = await asyncio.to_thread(
                    self.store.snapshot, workspace, cache_key=agent_id, budget=budget)
                known = prov.marks.get(ref)
                if not check:
                    why = tainted or prov.taint or prov.marks.get(last_ref or "", "")
                elif ref == prov.head or known is not None:
                    why = known or prov.taint
                else:
                    why = ("files in the workspace were changed outside the agent's tools"
                           if stats.files else prov.taint)
                why = why or _unkept(stats)
                await self._share(agent_id, scope, ref, why, session_id)
            except (AgentdError, OSError) as exc:
                return [await self._failed(agent_id, session_id, workspace, prov, exc,
                                           check=check, tainted=tainted,
                                           quota_bytes=quota_bytes)]
            prov.mark(ref, why)
            prov.head, prov.taint = ref, why
            prov.stored += stats.new_bytes
            for session, seen in self._writers.get(agent_id, {}).items():
                if session != session_id:
                    seen.add(ref)
            if not check:
                self._end_write(agent_id, session_id, tainted, prov)
            await self._save(agent_id, prov)
        over = self._quota(workspace, stats.bytes, quota_bytes)
        news = bool(why) and tainted is None
        if ref == last_ref and not news and not over:
            return []
        data: WorkspaceSnapshotData = {
            "ref": ref, "files": stats.files, "bytes": stats.bytes,
            "hashed_bytes": stats.hashed_bytes, "new_bytes": stats.new_bytes,
            "ms": round(stats.duration_ms, 3), "taken_at": self._taken_at()}
        if why and (check or news):
            data["tainted"] = why
        if over:
            data["quota_exceeded"] = over
        if stats.skipped:
            data["skipped"] = stats.skipped[:20]
        if stats.xattrs:
            data["xattrs"] = stats.xattrs[:20]
        if self.shared is not None:
            self._noted(agent_id, self.node_id)  # (its head, once committed)
        return [NewEvent.of(WorkspaceSnapshot(data=data))]

    async def _share(self, agent_id: str, scope: str, ref: str, why: str,
                     session_id: str) -> None:
        """Copy the snapshot and its mark to the shared store (nothing without one).
        A snapshot taken while another session's step may be writing is marked
        untrusted there: that step may yet turn out tainted, and another node that
        restores the snapshot meanwhile must not take it as clean (this node learns
        the step's end, and keeps its own mark, as on one node)."""
        if self.shared is None:
            return
        others = [s for s in self._writers.get(agent_id, {}) if s != session_id]
        shared_why = why or (
            f"taken on node {self.node_id} while another session's step was writing"
            if others else "")
        try:
            self.pushed_bytes += await push_snapshot(self.store, self.shared, scope, ref)
            await self.shared.mark(agent_id, {ref: shared_why})
        except (AgentdError, OSError):
            raise
        except Exception as exc:  # the database's own errors (a lost connection...)
            raise StoreError(f"the snapshot could not be copied to the shared snapshot "
                             f"store: {type(exc).__name__}: {exc}",
                             code="snapshot_not_shared", retryable=True) from exc

    async def changes(self, agent_id: str, ref: str, against: str | None,
                      *, limit: int = 1000, scope: str = "default") -> dict[str, Any]:
        """What changed from snapshot ``against`` (None: an empty workspace) to ``ref``,
        both taken of this agent's workspace (:func:`manifest_changes`). A ref the
        agent never took is ``snapshot_not_found``, even if another agent's is stored:
        the store is shared, an agent's snapshots are not. One taken on another node
        is read from the shared store (its manifest only, under ``scope``)."""
        prov = await self._load(agent_id)
        for one in (ref, against):
            if one is None or one in prov.marks:
                continue
            if self.shared is None or one not in await self.shared.marks(agent_id, [one]):
                raise NotFound(f"the agent has no snapshot {one}", code="snapshot_not_found")
            if not await asyncio.to_thread(self.store.has_object, one):
                try:
                    await pull_manifest(self.store, self.shared, scope, one)
                except ObjectMissing:
                    raise NotFound(f"the agent has no snapshot {one}",
                                   code="snapshot_not_found") from None

        def read() -> tuple[dict[str, Any], dict[str, Any]]:
            return self.store.manifest(ref), (self.store.manifest(against) if against else {})

        new, old = await asyncio.to_thread(read)
        return manifest_changes(old, new, limit=limit)

    async def _failed(self, agent_id: str, session_id: str, workspace: Path,
                      prov: _Provenance, exc: AgentdError | OSError, *, check: bool,
                      tainted: str | None, quota_bytes: int | None) -> NewEvent:
        """Fail closed: the workspace keeps (or takes) the writer's taint, and a
        session that cannot see what it would read is tainted."""
        error: ErrorData = (
            cast(ErrorData, exc.to_dict()) if isinstance(exc, AgentdError)
            else {"code": "snapshot_failed", "message": str(exc.strerror or exc),
                  "retryable": True})
        log.warning("workspace of agent %s not snapshotted: %s", agent_id,
                    error["message"])
        if tainted and not prov.taint:
            prov.taint = f"written while a session was tainted ({tainted})"
        if not check:
            self._end_write(agent_id, session_id, tainted, prov)
        await self._save(agent_id, prov)
        data: WorkspaceSnapshotData = {"ref": None, "error": error}
        if error.get("code") == "workspace_too_large":
            # Larger than a snapshot may hold: over any quota below that.
            over = self._quota(workspace, self.store.max_bytes + 1, quota_bytes)
            if over:
                data["quota_exceeded"] = over
        if tainted is None and (check or prov.taint):
            data["tainted"] = (
                f"the workspace could not be snapshotted ({error['message']}): what it "
                "holds is of unknown provenance" if check else prov.taint)
        return NewEvent.of(WorkspaceSnapshot(data=data))

    def _quota(self, workspace: Path, size: int, quota_bytes: int | None
               ) -> QuotaData | None:
        """Record the workspace's size for the file tools' quota; the event's note if
        it is over."""
        if quota_bytes is None:
            return None
        set_usage(workspace, size, quota_bytes)
        if size <= quota_bytes:
            return None
        return {"bytes": size, "max_bytes": quota_bytes,
                "message": "the workspace is over its size quota: file tools refuse to "
                           "write until files are removed"}

    def _path(self, agent_id: str) -> Path:
        return self.store.root / "provenance" / f"{agent_id}.json"

    def _read_provenance(self, agent_id: str) -> _Provenance:
        try:
            return _Provenance.of(orjson.loads(self._path(agent_id).read_bytes()))
        except FileNotFoundError:
            return _Provenance()
        except (OSError, orjson.JSONDecodeError, TypeError, ValueError):
            # Fail closed: a workspace whose history is lost is of unknown provenance.
            log.warning("provenance of agent %s unreadable; its workspace is untrusted",
                        agent_id)
            return _Provenance(taint="the workspace's provenance record was unreadable")

    async def _save(self, agent_id: str, prov: _Provenance) -> None:
        data = orjson.dumps({"marks": prov.marks, "head": prov.head, "taint": prov.taint,
                             "stored": prov.stored})
        try:
            await asyncio.to_thread(self._write, self._path(agent_id), data)
        except OSError as exc:  # disk full: memory still has it, and fails closed
            log.error("provenance of agent %s not saved: %s", agent_id, exc)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(".tmp")
        temp.write_bytes(data)
        os.replace(temp, path)

    async def restore(self, agent_id: str, workspace: Path, ref: str | None, *,
                      seq: int = 0, scope: str = "default") -> WorkspaceRestoredData:
        """Put the workspace back to ``ref``; the ``workspace.restored`` event's data
        (``seq``: the point of the session's log restored to). A snapshot another node
        took is fetched from the shared snapshot store first (under ``scope``)."""
        if ref is None:
            return {"seq": seq, "ref": None,
                    "note": "no snapshot of the workspace in this session: its files "
                            "were left as they are"}
        started = time.perf_counter()
        async with self._lock(agent_id):
            prov = await self._load(agent_id)
            try:
                if self.shared is not None:
                    await self._fetch(agent_id, scope, ref, prov)
                stats = await asyncio.to_thread(self.store.restore, ref, workspace,
                                                cache_key=agent_id)
            except (AgentdError, OSError) as exc:
                error: ErrorData = (
                    cast(ErrorData, exc.to_dict()) if isinstance(exc, AgentdError)
                    else {"code": "restore_failed", "message": str(exc),
                          "retryable": True})
                log.error("workspace of agent %s not restored to %s: %s", agent_id, ref,
                          error["message"])
                # Part-way: what was written of ``ref`` mixes with what was there.
                prov.taint = prov.taint or prov.marks.get(ref, "")
                await self._save(agent_id, prov)
                return {"seq": seq, "ref": ref, "error": error}
            # The files are ``ref``'s now, and as trusted as it was when taken (one the
            # agent never took is of unknown provenance).
            # A tainted session may be writing right now: it keeps its mark.
            writing = next(iter(self._tainted_writers.get(agent_id, {}).values()), None)
            prov.head = ref
            prov.taint = prov.marks.get(
                ref, "restored a snapshot the agent's steps did not take") or (
                f"written while a session was tainted ({writing})" if writing else "")
            await self._save(agent_id, prov)
        return {"seq": seq, "ref": ref, "written": stats.written, "removed": stats.removed,
                "unchanged": stats.unchanged,
                "ms": round((time.perf_counter() - started) * 1000, 3),
                "shared": "the workspace is the agent's: every session of it sees these "
                          "files", "taken_at": self._taken_at()}

    async def copy_to(self, ref: str, target: Path, *, scope: str = "default") -> str | None:
        """Write snapshot ``ref`` into ``target`` (a fork's scratch copy: neither the
        agent's workspace nor its provenance is touched); why not, when it cannot be
        (the snapshot is no longer kept, or damaged). A snapshot another node took is
        fetched from the shared snapshot store first."""
        try:
            if self.shared is not None:
                self.pulled_bytes += await pull_snapshot(self.store, self.shared, scope, ref)
            await asyncio.to_thread(self.store.restore, ref, target)
        except (AgentdError, OSError) as exc:
            return exc.message if isinstance(exc, AgentdError) else str(exc)
        return None

    async def mark_of(self, agent_id: str, ref: str) -> str | None:
        """Why snapshot ``ref`` of the agent is untrusted ("" for a clean one; None: a
        snapshot this node has no mark of, of unknown provenance)."""
        return (await self._load(agent_id)).marks.get(ref)

    async def _fetch(self, agent_id: str, scope: str, ref: str, prov: _Provenance) -> None:
        """Fetch what this node lacks of snapshot ``ref`` from the shared store, and
        its mark (a snapshot with no mark there is one the agent's steps did not take,
        as far as anyone can tell: it restores as untrusted)."""
        assert self.shared is not None
        try:
            self.pulled_bytes += await pull_snapshot(self.store, self.shared, scope, ref)
            if ref not in prov.marks:
                found = await self.shared.marks(agent_id, [ref])
                if ref in found:
                    prov.marks[ref] = found[ref]
        except (AgentdError, OSError):
            raise
        except Exception as exc:  # the database's own errors
            raise StoreError(f"the snapshot could not be read from the shared snapshot "
                             f"store: {type(exc).__name__}: {exc}",
                             code="snapshot_unavailable", retryable=True) from exc

    def preferred(self, head: WorkspaceHead | None) -> str | None:
        """The node a run of the agent whose head this is should run on, if not this
        one: where its files were last committed (None: here, or anywhere)."""
        if self.shared is None or head is None or head.node in (None, self.node_id):
            return None
        return head.node

    async def head(self, agent_id: str) -> WorkspaceHead | None:
        """The agent's workspace as last committed on any node (None without a shared
        snapshot store: nothing follows)."""
        if self.shared is None or self._heads is None:
            return None
        head = await self._heads(agent_id)
        self._noted(agent_id, head.node if head is not None else None)
        return head

    def _noted(self, agent_id: str, node: str | None) -> None:
        if len(self._nodes) > 10_000:
            self._nodes.clear()
        self._nodes[agent_id] = (time.monotonic(), node)

    async def elsewhere(self, agent_id: str, *, max_age_s: float = 1.0) -> str | None:
        """The other node where the agent's files were last committed (None: this one,
        or none), as read at most ``max_age_s`` ago: a run of the agent is best
        started there (node affinity). Costs a read of the store at most once per
        ``max_age_s`` and agent."""
        if self.shared is None:
            return None
        cached = self._nodes.get(agent_id)
        if cached is not None and time.monotonic() - cached[0] < max_age_s:
            node = cached[1]
        else:
            head = await self.head(agent_id)
            node = head.node if head is not None else None
        return None if node in (None, self.node_id) else node

    async def follow(self, agent_id: str, workspace: Path, *, scope: str, seq: int,
                     busy: bool = False, head: WorkspaceHead | None = None
                     ) -> WorkspaceRestoredData | None:
        """Before a run of the agent starts (or resumes) here: put the workspace at the
        agent's last committed state if another node committed it and this node's copy
        is not at it (``head``: read already; else read now). The ``workspace.restored``
        event's data (``reason: "followed"``), or None when nothing was restored.

        Not restored while ``busy`` (another run of the agent is under way here: its
        own snapshots will be the agent's latest) or while a step of the agent may be
        writing. A head this node committed is not followed: its copy is at it, or
        past it (a step not committed yet, which its run's check finds, as on one node).

        Raises:
            StoreError: the snapshot is missing or damaged in the shared store
                (``snapshot_corrupt``), or it cannot be read: the workspace is untouched.
        """
        if head is None:
            head = await self.head(agent_id)
        if head is None:
            return None
        started = time.perf_counter()
        async with self._lock(agent_id):
            prov = await self._load(agent_id)
            at = prov.head
            if at == head.ref or (head.node == self.node_id and at is not None):
                return None
            if busy or self._writers.get(agent_id):
                log.info("workspace of agent %s not brought to %s: a run of it is under "
                         "way here", agent_id, head.ref)
                return None
            await self._fetch(agent_id, scope, head.ref, prov)
            try:
                stats = await asyncio.to_thread(self.store.restore, head.ref, workspace,
                                                cache_key=agent_id)
            except BaseException:
                # Part-way: what was written of it mixes with what was there.
                prov.head = None
                prov.taint = prov.taint or "a restore of the workspace stopped part-way"
                await self._save(agent_id, prov)
                raise
            prov.head = head.ref
            # As trusted as its mark says; without one, of unknown provenance.
            prov.taint = prov.marks.get(
                head.ref, "restored a snapshot whose provenance is not recorded") or ""
            await self._save(agent_id, prov)
        self.followed += 1
        self._noted(agent_id, self.node_id)
        log.info("workspace of agent %s brought to %s (committed on node %s): %d written, "
                 "%d removed", agent_id, head.ref, head.node, stats.written, stats.removed)
        data: WorkspaceRestoredData = {
            "seq": seq, "ref": head.ref, "written": stats.written, "removed": stats.removed,
            "unchanged": stats.unchanged,
            "ms": round((time.perf_counter() - started) * 1000, 3),
            "reason": "followed", "node": head.node, "taken_at": self._taken_at(),
            "note": "the agent's files were last committed on another node: brought here "
                    "before the run"}
        return data

    async def collect(self, keep: set[str], *, min_age_s: float = 3600.0) -> int:
        """Drop snapshot objects no log refers to (young ones are kept: their events may
        be on their way to the store), then count again what each agent's snapshots
        hold (its snapshot budget: each distinct content once)."""
        removed = await asyncio.to_thread(self.store.gc, keep, min_age_s=min_age_s)
        if self.shared is not None:
            removed += await self.shared.collect(keep)
        folder = self.store.root / "provenance"
        agents = await asyncio.to_thread(
            lambda: sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir()
            else [])
        for agent_id in agents:
            async with self._lock(agent_id):
                prov = await self._load(agent_id)
                prov.stored, gone = await asyncio.to_thread(self._held, list(prov.marks))
                for ref in gone:  # collected: it can never be restored
                    prov.marks.pop(ref, None)
                await self._save(agent_id, prov)
        return removed

    def _held(self, refs: list[str]) -> tuple[int, list[str]]:
        """The bytes of distinct content the snapshots ``refs`` hold, and the refs
        that are no longer stored."""
        sizes: dict[str, int] = {}
        gone = []
        for ref in refs:
            try:
                entries = self.store.manifest(ref)
            except NotFound:
                gone.append(ref)
                continue
            except AgentdError:
                continue
            for entry in entries.values():
                if entry["type"] == "file":
                    sizes[entry["hash"]] = entry["size"]
        return sum(sizes.values()), gone


class SessionWorkspace:
    """What one run does with its agent's workspace: the checks before its steps and
    the snapshot after a step that may write (made by the runtime per run).

    Args:
        keeper: the daemon's keeper.
        agent_id, session_id: whose.
        workspace: the agent's workspace directory.
        history: the session's history (its taint and latest snapshot, read live).
        budget_bytes: the agent's snapshot store budget (None: none).
        quota_bytes: the agent's workspace size quota (None: none).
        scope: the agent's tenant (where its snapshots go in a shared store).
    """

    def __init__(self, keeper: WorkspaceKeeper, *, agent_id: str, session_id: str,
                 workspace: Path, history: SessionHistory,
                 budget_bytes: int | None = None, quota_bytes: int | None = None,
                 scope: str = "default") -> None:
        self.keeper = keeper
        self.scope = scope
        self.agent_id = agent_id
        self.session_id = session_id
        self.workspace = workspace
        self.history = history
        self.budget_bytes = budget_bytes
        self.quota_bytes = quota_bytes
        self._writing = False

    def needs_check(self) -> bool:
        """Whether a step of this (clean) session must look at the files first: the
        workspace moved since the session's last snapshot, or it is tainted."""
        if self.history.tainted is not None:
            return False
        ref = self.history.workspace_ref
        return (self.keeper.moved(self.agent_id, ref)
                or bool(self.keeper.taint_of(self.agent_id, ref)))

    async def check(self) -> list[NewEvent]:
        return await self._snapshot(check=True)

    async def writing(self) -> None:
        """A call that may write is about to run (once per step)."""
        if not self._writing:
            self._writing = True
            await self.keeper.writing(self.agent_id, self.session_id,
                                      self.history.tainted)

    async def snapshot(self) -> list[NewEvent]:
        """After a step that may have written; ends the step."""
        self._writing = False
        return await self._snapshot(check=False)

    async def done(self) -> None:
        """The step ended without its snapshot (an error, a cancellation)."""
        if self._writing:
            self._writing = False
            await self.keeper.written(self.agent_id, self.session_id,
                                      self.history.tainted)

    async def _snapshot(self, *, check: bool) -> list[NewEvent]:
        return await self.keeper.snapshot(
            self.agent_id, self.workspace, self.history.workspace_ref,
            session_id=self.session_id, check=check, tainted=self.history.tainted,
            budget_bytes=self.budget_bytes, quota_bytes=self.quota_bytes, scope=self.scope)
