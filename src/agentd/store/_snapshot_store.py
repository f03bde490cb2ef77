"""The Store's methods for workspace snapshots kept in the database (``[sandbox]
snapshot_store = "store"``, the default on PostgreSQL), and for the agents' workspace
heads, whatever the snapshot store.

Three kinds of rows (migration 20):

- **Objects** (``snapshot_objects``, ``snapshot_chunks``): a content-addressed blob
  (a file's content or a snapshot's manifest, named by its SHA-256) stored in chunks of
  at most :data:`CHUNK` bytes, under a *scope* (the agent's tenant): one tenant's
  snapshots never find, read or dedupe against another's. An object is written chunk
  by chunk, a few per transaction, and counts as stored only once its row says
  ``complete`` (written last): a half-written object is never read, and the collector
  removes it once it is old. ``used_at`` is when a snapshot last needed the object; the
  collector never removes one used within its grace period, so a snapshot that found
  an object already stored cannot lose it before its event is committed.
- **Marks** (``snapshot_marks``): for each snapshot an agent took, why its content is
  untrusted ("" when it is not); a mark only ever gains a taint. A node that restores a
  snapshot another node took reads its mark here.
- **Heads** (``workspace_heads``): the agent's workspace as last committed anywhere: the
  ref of the last ``workspace.snapshot`` or ``workspace.restored`` event with one, the
  node that committed it (the run's lease owner; NULL for a restore made outside a run)
  and when it was taken. Written by :func:`note_heads` inside the transaction that
  appends the event, so a head is exactly as committed as its event. Within one node
  a head taken earlier never replaces one taken later (two sessions of an agent may
  commit their snapshots in the other order); across nodes the last commit wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from agentd.clock import Clock
from agentd.store.engine import Engine, Tx
from agentd.store.records import EventRecord

__all__ = ["CHUNK", "SnapshotObjectInfo", "SnapshotRowStore", "WorkspaceHead", "note_heads"]

#: The largest chunk of an object one row holds.
CHUNK = 1 << 20
#: Chunks written (or read) per transaction.
_BATCH = 4
_HEAD_KINDS = ("workspace.snapshot", "workspace.restored")


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkspaceHead:
    """An agent's workspace as last committed (see the module's docstring)."""

    agent_id: str
    ref: str
    node: str | None
    taken_at: float | None
    session_id: str
    seq: int
    at: float


@dataclass(frozen=True, kw_only=True, slots=True)
class SnapshotObjectInfo:
    size: int
    chunks: int


def note_heads(tx: Tx, session_id: str, records: Sequence[EventRecord],
               node: str | None) -> None:
    """Move the session's agent's workspace head to the last of ``records`` that
    names a workspace state (called by :meth:`Store.append` in its transaction)."""
    last = None
    for record in records:
        if record.kind in _HEAD_KINDS and isinstance(record.data.get("ref"), str) \
                and not record.data.get("error"):
            last = record
    if last is None:
        return
    taken = last.data.get("taken_at")
    taken_at = float(taken) if isinstance(taken, int | float) else None
    tx.execute(
        "INSERT INTO workspace_heads (agent_id, ref, node, taken_at, session_id, seq, at) "
        "SELECT agent_id, ?, ?, ?, id, ?, ? FROM sessions WHERE id = ? "
        "ON CONFLICT (agent_id) DO UPDATE SET ref = excluded.ref, node = excluded.node, "
        "taken_at = excluded.taken_at, session_id = excluded.session_id, "
        "seq = excluded.seq, at = excluded.at "
        "WHERE excluded.node IS NULL OR workspace_heads.node IS NULL "
        "OR excluded.node <> workspace_heads.node OR workspace_heads.taken_at IS NULL "
        "OR excluded.taken_at IS NULL OR excluded.taken_at >= workspace_heads.taken_at",
        (last.data["ref"], node, taken_at, last.seq, last.at, session_id))


class SnapshotRowStore:
    engine: Engine
    clock: Clock

    # -- heads -------------------------------------------------------------------------

    async def workspace_head(self, agent_id: str) -> WorkspaceHead | None:
        """The agent's workspace as last committed (None: no state was ever committed)."""
        row = await self.engine.read(lambda tx: tx.one(
            "SELECT agent_id, ref, node, taken_at, session_id, seq, at FROM workspace_heads "
            "WHERE agent_id = ?", (agent_id,)))
        if row is None:
            return None
        return WorkspaceHead(agent_id=str(row[0]), ref=str(row[1]),
                             node=None if row[2] is None else str(row[2]),
                             taken_at=None if row[3] is None else float(row[3]),
                             session_id=str(row[4]), seq=int(row[5]), at=float(row[6]))

    async def announce(self, note: str) -> None:
        """Tell every node sharing the database ``note`` (on the agents' channel; a
        run offered to the node holding its agent's files: :mod:`agentd.runtime.
        affinity`). Nothing to tell on a database no other node shares."""
        if self.engine.shared:
            await self.engine.write(lambda tx: self.engine.announce_agent(tx, note))

    # -- marks -------------------------------------------------------------------------

    async def snapshot_marks(self, agent_id: str, refs: Iterable[str]) -> dict[str, str]:
        """The marks of the agent's snapshots ``refs`` that have one: ref -> why
        ("" for the agent's own, untainted content)."""
        wanted = list(dict.fromkeys(refs))

        def op(tx: Tx) -> dict[str, str]:
            found: dict[str, str] = {}
            for start in range(0, len(wanted), 500):
                part = wanted[start:start + 500]
                for ref, why in tx.all(
                        f"SELECT ref, why FROM snapshot_marks WHERE agent_id = ? AND ref IN "
                        f"({', '.join('?' * len(part))})", [agent_id, *part]):
                    found[str(ref)] = str(why)
            return found

        return await self.engine.read(op) if wanted else {}

    async def mark_snapshots(self, agent_id: str, marks: Mapping[str, str]) -> None:
        """Record why each snapshot's content is untrusted; a mark that says it is never
        goes back to "" (a taint is never forgotten)."""
        if not marks:
            return
        now = self.clock.time()

        def op(tx: Tx) -> None:
            tx.executemany(
                "INSERT INTO snapshot_marks (agent_id, ref, why, created_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (agent_id, ref) DO UPDATE SET "
                "why = excluded.why WHERE snapshot_marks.why = '' AND excluded.why <> ''",
                [(agent_id, ref, why, now) for ref, why in sorted(marks.items())])

        await self.engine.write(op)

    # -- objects -----------------------------------------------------------------------

    async def snapshot_objects_present(self, scope: str, digests: Sequence[str], *,
                                       refresh_before: float) -> set[str]:
        """Which of ``digests`` are stored (complete) under ``scope``. Those last used
        before ``refresh_before`` are marked used now, in the same transaction: the
        collector then keeps them for its whole grace period."""
        wanted = list(dict.fromkeys(digests))
        if not wanted:
            return set()
        now = self.clock.time()

        def op(tx: Tx) -> set[str]:
            present: set[str] = set()
            for start in range(0, len(wanted), 500):
                part = wanted[start:start + 500]
                marks = ", ".join("?" * len(part))
                rows = tx.all(
                    f"SELECT digest, used_at FROM snapshot_objects WHERE scope = ? AND "
                    f"complete = 1 AND digest IN ({marks})", [scope, *part])
                stale = [str(d) for d, used in rows if float(used) < refresh_before]
                present.update(str(d) for d, used in rows if float(used) >= refresh_before)
                if stale:
                    # A row the collector removed meanwhile is not returned: stored again.
                    present.update(str(r[0]) for r in tx.all(
                        f"UPDATE snapshot_objects SET used_at = ? WHERE scope = ? AND "
                        f"complete = 1 AND digest IN ({', '.join('?' * len(stale))}) "
                        "RETURNING digest", [now, scope, *stale]))
            return present

        return await self.engine.write(op)

    async def begin_snapshot_object(self, scope: str, digest: str, *, size: int,
                                    chunks: int, manifest: bool) -> bool:
        """Start storing an object (its row, not complete yet); False when it is
        stored already (complete). A half-written one is started again."""
        now = self.clock.time()

        def op(tx: Tx) -> bool:
            row = tx.one("SELECT complete FROM snapshot_objects WHERE scope = ? AND "
                         "digest = ?", (scope, digest))
            if row is not None and int(row[0]) == 1:
                tx.execute("UPDATE snapshot_objects SET used_at = ? WHERE scope = ? AND "
                           "digest = ?", (now, scope, digest))
                return False
            if row is None:
                tx.execute(
                    "INSERT INTO snapshot_objects (scope, digest, size, chunks, manifest, "
                    "complete, created_at, used_at) VALUES (?, ?, ?, ?, ?, 0, ?, ?) "
                    "ON CONFLICT (scope, digest) DO NOTHING",
                    (scope, digest, size, chunks, int(manifest), now, now))
            else:
                tx.execute("UPDATE snapshot_objects SET size = ?, chunks = ?, used_at = ? "
                           "WHERE scope = ? AND digest = ? AND complete = 0",
                           (size, chunks, now, scope, digest))
            return True

        return await self.engine.write(op)

    async def put_snapshot_chunks(self, scope: str, digest: str, first: int,
                                  chunks: Sequence[bytes]) -> None:
        """Store chunks ``first``, ``first + 1``... of an object being written (a chunk
        written before, by this node or another, is the same bytes: kept)."""
        def op(tx: Tx) -> None:
            tx.executemany(
                "INSERT INTO snapshot_chunks (scope, digest, n, data) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (scope, digest, n) DO NOTHING",
                [(scope, digest, first + i, data) for i, data in enumerate(chunks)])

        await self.engine.write(op)

    async def finish_snapshot_object(self, scope: str, digest: str) -> None:
        """The object's chunks are all written: it is stored."""
        now = self.clock.time()
        await self.engine.write(lambda tx: tx.execute(
            "UPDATE snapshot_objects SET complete = 1, used_at = ? WHERE scope = ? AND "
            "digest = ?", (now, scope, digest)))

    async def snapshot_object(self, scope: str, digest: str) -> SnapshotObjectInfo | None:
        """A stored object's size and chunk count (None: not stored, or not complete)."""
        row = await self.engine.read(lambda tx: tx.one(
            "SELECT size, chunks FROM snapshot_objects WHERE scope = ? AND digest = ? "
            "AND complete = 1", (scope, digest)))
        return None if row is None else SnapshotObjectInfo(size=int(row[0]),
                                                           chunks=int(row[1]))

    async def snapshot_object_start(self, scope: str, digest: str, count: int
                                    ) -> tuple[SnapshotObjectInfo | None,
                                               list[tuple[int, bytes]]]:
        """A stored object's size and chunk count and its first ``count`` chunks, in
        one query (None and []: not stored, or not complete)."""
        rows = await self.engine.read(lambda tx: tx.all(
            "SELECT o.size, o.chunks, c.n, c.data FROM snapshot_objects o "
            "LEFT JOIN snapshot_chunks c ON c.scope = o.scope AND c.digest = o.digest "
            "AND c.n < ? WHERE o.scope = ? AND o.digest = ? AND o.complete = 1 "
            "ORDER BY c.n", (count, scope, digest)))
        if not rows:
            return None, []
        info = SnapshotObjectInfo(size=int(rows[0][0]), chunks=int(rows[0][1]))
        return info, [(int(n), bytes(data)) for _, _, n, data in rows if n is not None]

    async def snapshot_chunks(self, scope: str, digest: str, first: int, count: int
                              ) -> list[tuple[int, bytes]]:
        """Chunks ``first`` to ``first + count - 1`` of an object, as stored (a missing
        one is simply not in the list)."""
        rows = await self.engine.read(lambda tx: tx.all(
            "SELECT n, data FROM snapshot_chunks WHERE scope = ? AND digest = ? AND n >= ? "
            "AND n < ? ORDER BY n", (scope, digest, first, first + count)))
        return [(int(n), bytes(data)) for n, data in rows]

    async def snapshot_object_rows(self) -> list[tuple[str, str, bool, float]]:
        """(scope, digest, whether it is a complete manifest, last used) of every object
        row, complete or not (what the collector looks at)."""
        rows = await self.engine.read(lambda tx: tx.all(
            "SELECT scope, digest, manifest * complete, used_at FROM snapshot_objects"))
        return [(str(s), str(d), int(m) == 1, float(u)) for s, d, m, u in rows]

    async def delete_snapshot_objects(self, scope: str, digests: Sequence[str], *,
                                      unused_since: float) -> int:
        """Delete these objects (and their chunks) unless used at or after
        ``unused_since``; how many went."""
        def op(tx: Tx) -> int:
            gone = 0
            for start in range(0, len(digests), 200):
                part = list(digests[start:start + 200])
                marks = ", ".join("?" * len(part))
                rows = tx.all(
                    f"DELETE FROM snapshot_objects WHERE scope = ? AND used_at < ? AND "
                    f"digest IN ({marks}) RETURNING digest", [scope, unused_since, *part])
                went = [str(r[0]) for r in rows]
                if went:
                    tx.execute(
                        f"DELETE FROM snapshot_chunks WHERE scope = ? AND digest IN "
                        f"({', '.join('?' * len(went))})", [scope, *went])
                gone += len(went)
            return gone

        return await self.engine.write(op)

    async def forget_snapshot_marks(self, keep: set[str], *, before: float) -> int:
        """Delete the marks of snapshots no log refers to (``keep``: every ref some log
        does), made before ``before``; and the heads of agents that are gone."""
        def op(tx: Tx) -> int:
            rows = tx.all("SELECT agent_id, ref FROM snapshot_marks WHERE created_at < ?",
                          (before,))
            stale = [(a, r) for a, r in rows if str(r) not in keep]
            tx.executemany("DELETE FROM snapshot_marks WHERE agent_id = ? AND ref = ?",
                           stale)
            tx.execute("DELETE FROM workspace_heads WHERE NOT EXISTS "
                       "(SELECT 1 FROM agents a WHERE a.id = workspace_heads.agent_id)")
            return len(stale)

        return await self.engine.write(op)
