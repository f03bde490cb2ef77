"""The store's rows for workspaces that follow their runs (migration 20): each agent's
workspace head, moved in the transaction of the event that names the files, and what
the migration keeps of a database from before. SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentd.store import Lease, NewEvent, Store, open_store
from agentd.store import store as store_module
from agentd.store._schema import MIGRATIONS

A, B, C = "a" * 64, "b" * 64, "c" * 64
#: This migration's number (found by its name: numbers may move when branches merge).
VERSION = next(v for v, name, _ in MIGRATIONS
               if name == "workspace snapshots in the store, marks and heads")


async def _running(store: Store, name: str = "w") -> tuple[str, str, str]:
    """An agent with a session whose run is under way: (agent id, session id, run id)."""
    agent = await store.create_agent(name=name, model="scripted", instructions="",
                                     tools=[], settings={})
    accepted = await store.accept_message(agent_id=agent.id, key="k", content="go")
    return agent.id, accepted.session.id, accepted.run.id


def _snap(ref: str | None, run_id: str | None, taken_at: float | None = None,
          **extra: object) -> NewEvent:
    data: dict[str, object] = {"ref": ref, **extra}
    if taken_at is not None:
        data["taken_at"] = taken_at
    return NewEvent(kind="workspace.snapshot", run_id=run_id, data=data)


async def test_the_head_moves_with_the_events_that_name_the_files(store: Store) -> None:
    agent_id, session_id, run_id = await _running(store)
    assert await store.workspace_head(agent_id) is None
    lease_a = Lease(owner="A", ttl=60, acquire=True)
    await store.append(session_id, [_snap(A, run_id, 10.0)], run_id=run_id, lease=lease_a)
    head = await store.workspace_head(agent_id)
    assert head is not None
    assert (head.ref, head.node, head.taken_at, head.session_id) == (A, "A", 10.0,
                                                                     session_id)
    # On one node, a snapshot taken before the head (another session's, committed
    # late) does not replace it; one taken after does.
    await store.append(session_id, [_snap(B, run_id, 9.0)], run_id=run_id, lease=lease_a)
    assert (await store.workspace_head(agent_id)).ref == A  # type: ignore[union-attr]
    await store.append(session_id, [_snap(B, run_id, 11.0)], run_id=run_id, lease=lease_a)
    assert (await store.workspace_head(agent_id)).ref == B  # type: ignore[union-attr]
    # A snapshot that failed names no files: the head stays.
    await store.append(session_id, [_snap(None, run_id, error={"code": "snapshot_failed"})],
                       run_id=run_id, lease=lease_a)
    assert (await store.workspace_head(agent_id)).ref == B  # type: ignore[union-attr]
    # A restore outside a run (no node): the last commit wins, whatever it says.
    [restored] = await store.append(session_id, [NewEvent(
        kind="workspace.restored", data={"seq": 1, "ref": C, "taken_at": 1.0})])
    head = await store.workspace_head(agent_id)
    assert head is not None
    assert (head.ref, head.node, head.seq) == (C, None, restored.seq)
    # So does another node's commit, even with an older clock (A lets the run go).
    await store.append(session_id, [], run_id=run_id,
                       lease=Lease(owner="A", ttl=60, release=True))
    await store.append(session_id, [_snap(A, run_id, 5.0)], run_id=run_id,
                       lease=Lease(owner="B", ttl=60, acquire=True))
    head = await store.workspace_head(agent_id)
    assert head is not None and (head.ref, head.node) == (A, "B")
    # A commit refused by its lease moves nothing.
    from agentd.store import LeaseLost

    with pytest.raises(LeaseLost):
        await store.append(session_id, [_snap(C, run_id, 99.0)], run_id=run_id,
                           lease=Lease(owner="A", ttl=60))
    assert (await store.workspace_head(agent_id)).ref == A  # type: ignore[union-attr]


async def test_marks_and_heads_of_what_is_gone_are_forgotten(store: Store) -> None:
    agent_id, session_id, run_id = await _running(store)
    await store.append(session_id, [_snap(A, run_id, 1.0)], run_id=run_id,
                       lease=Lease(owner="A", ttl=60, acquire=True))
    await store.mark_snapshots(agent_id, {A: "", B: "tainted"})
    assert await store.forget_snapshot_marks({A}, before=store.clock.time() + 1) == 1
    assert await store.snapshot_marks(agent_id, [A, B]) == {A: ""}
    await store.delete_agent("w")
    await store.forget_snapshot_marks(set(), before=0.0)
    assert await store.workspace_head(agent_id) is None


@pytest.mark.empty_schema
async def test_the_snapshot_migration_keeps_older_data(store_url: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Snapshots logged before the migration (20) stay as they are (nothing is copied
    in: no head); the first snapshot after it makes one."""
    monkeypatch.setattr(store_module, "MIGRATIONS",
                        [m for m in MIGRATIONS if m[0] < VERSION])
    # (that schema has no agent revisions, migration 24: none is written)
    note_revision = store_module.note_revision
    monkeypatch.setattr(store_module, "note_revision", lambda *args, **kwargs: None)
    old = await open_store(store_url)
    try:
        assert await old.schema_version() == VERSION - 1
        agent_id, session_id, run_id = await _running(old)

        def logged(tx: Any) -> None:  # (as a build from before wrote it)
            seq = tx.one("UPDATE sessions SET last_seq = last_seq + 1 WHERE id = ? "
                         "RETURNING last_seq", (session_id,))[0]
            tx.execute("INSERT INTO events (session_id, seq, run_id, kind, data, at) "
                       "VALUES (?, ?, ?, 'workspace.snapshot', ?, 1.0)",
                       (session_id, seq, run_id, json.dumps({"ref": A, "files": 0})))
            tx.execute("UPDATE runs SET status = 'running', lease_owner = 'A', "
                       "lease_expires_at = ? WHERE id = ?", (old.clock.time() + 60, run_id))

        await old.engine.write(logged)
    finally:
        await old.close()
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS)
    monkeypatch.setattr(store_module, "note_revision", note_revision)
    store = await open_store(store_url)
    try:
        assert await store.schema_version() >= VERSION
        assert [e.data.get("ref") for e in await store.read_events(session_id)
                if e.kind == "workspace.snapshot"] == [A]
        assert await store.snapshot_refs() == {A}
        assert await store.workspace_head(agent_id) is None
        await store.append(session_id, [_snap(B, run_id, 2.0)], run_id=run_id,
                           lease=Lease(owner="A", ttl=60))
        head = await store.workspace_head(agent_id)
        assert head is not None and (head.ref, head.node) == (B, "A")
    finally:
        await store.close()
