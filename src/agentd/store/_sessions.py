"""A session as a whole: checkpoints, restore and fork, and messages added without a
run. Each function runs inside one transaction (``tx``); the caller's ``now`` is the
commit time."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Any

from agentd.errors import (
    CheckpointNotFound,
    Conflict,
    InvalidInput,
    SessionBusy,
    SessionExists,
    SessionNotFound,
)
from agentd.events import (
    CHECKPOINT_KINDS,
    Checkpoint,
    SessionForked,
    SessionRestored,
)
from agentd.store import rows as _rows
from agentd.store.engine import Tx
from agentd.store.log import append
from agentd.store.records import (
    CheckpointRecord,
    EventRecord,
    NewEvent,
    SessionRecord,
    live_events,
)
from agentd.store.rows import (
    CHECKPOINT_COLS,
    EVENT_COLS,
    INSERT_EVENT,
    SESSION_COLS,
    SESSION_NEW,
    active,
)

__all__ = ["add_messages", "context", "fork", "new_checkpoint", "restore", "seed"]
#: Events a fork does not copy: they describe the source session, not its state.
_NOT_COPIED = frozenset({"session.restored", "checkpoint"})


_COMPACTED = "session.compacted"


def _renumbered(data: dict[str, Any], old_seqs: list[int]) -> dict[str, Any]:
    """A compaction's range in the fork's numbering (its events renumbered from 1): the
    copied events it covered, and no others."""
    low = bisect.bisect_left(old_seqs, int(data.get("from_seq", 0))) + 1
    high = bisect.bisect_right(old_seqs, int(data.get("to_seq", -1)))
    return {**data, "from_seq": low, "to_seq": high}


def new_checkpoint(tx: Tx, session_id: str, name: str | None, kind: str,
                   now: float) -> tuple[CheckpointRecord, EventRecord]:
    """Log a ``checkpoint`` event and record it: the checkpoint is the state at its seq."""
    if kind not in CHECKPOINT_KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}")
    checkpoint_id = _rows.new_id("c")
    event = append(tx, session_id, [NewEvent.of(Checkpoint(data={
        "id": checkpoint_id, "name": name, "kind": kind}))], now)[0]
    tx.execute(f"INSERT INTO checkpoints ({CHECKPOINT_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
               (checkpoint_id, session_id, event.seq, name, kind, now))
    tx.execute("UPDATE sessions SET checkpoint_seq = ?, checkpoint_at = ? WHERE id = ?",
               (event.seq, now, session_id))
    return CheckpointRecord(id=checkpoint_id, session_id=session_id, seq=event.seq,
                            name=name, kind=kind, created_at=now), event


def _target_seq(tx: Tx, session_id: str, last_seq: int, seq: int | None,
                checkpoint: str | None) -> tuple[int, str | None]:
    """Resolve a restore or fork target (a checkpoint id or name, or a seq) to a seq."""
    if checkpoint is not None:
        row = tx.one("SELECT id, seq FROM checkpoints WHERE session_id = ? AND "
                     "(id = ? OR name = ?) ORDER BY id = ? DESC LIMIT 1",
                     (session_id, checkpoint, checkpoint, checkpoint))
        if row is None:
            raise CheckpointNotFound(f"checkpoint {checkpoint!r} not found in this session")
        return int(row[1]), str(row[0])
    assert seq is not None
    if not 0 <= seq <= last_seq:
        raise InvalidInput(f"seq {seq} is not in this session's log (0 to {last_seq})",
                           field="body.seq")
    return seq, None


def restore(tx: Tx, session_id: str, seq: int | None, checkpoint: str | None, now: float
            ) -> EventRecord:
    """:meth:`Store.restore_session`'s transaction (see there)."""
    row = tx.one("SELECT last_seq FROM sessions WHERE id = ?", (session_id,))
    if row is None:
        raise SessionNotFound(f"session {session_id} does not exist")
    last_seq = int(row[0])
    to_seq, checkpoint_id = _target_seq(tx, session_id, last_seq, seq, checkpoint)
    restored = SessionRestored(data={
        "to_seq": to_seq, "checkpoint": checkpoint_id,
        "archived": {"from_seq": to_seq + 1, "to_seq": last_seq}})
    # Append first (it locks the session's row), then look for active runs: a message
    # accepted concurrently is either seen here or comes after.
    event = append(tx, session_id, [NewEvent.of(restored)], now)[0]
    busy = tx.one(f"SELECT id FROM runs WHERE session_id = ? AND {active()} "
                  "LIMIT 1", (session_id,))
    if busy is not None:
        raise SessionBusy(f"the session has run {busy[0]} queued or under way; "
                          "cancel it or wait for it before restoring",
                          details={"active_run": busy[0]})
    return event


def add_messages(tx: Tx, *, agent_id: str, key: str, new_session_id: str,
                 events: Sequence[NewEvent], now: float, create: bool,
                 expect_seq: int | None, on_new_session: Callable[[list[str]], None] | None
                 ) -> tuple[SessionRecord, list[EventRecord], bool]:
    """:meth:`Store.add_messages`'s transaction (see there): the session, the events
    and whether the session was created here."""
    row = tx.one(f"SELECT {SESSION_COLS} FROM sessions WHERE agent_id = ? AND key = ?",
                 (agent_id, key))
    created = False
    if row is None:
        if not create:
            raise SessionNotFound(f"session {key!r} not found")
        tx.execute(
            f"INSERT INTO sessions ({SESSION_NEW}) VALUES (?, ?, ?, 0, ?, ?, 0, ?) "
            "ON CONFLICT (agent_id, key) DO NOTHING",
            (new_session_id, agent_id, key, now, now, now))
        row = tx.one(f"SELECT {SESSION_COLS} FROM sessions WHERE agent_id = ? AND key = ?",
                     (agent_id, key))
        assert row is not None
        created = str(row[0]) == new_session_id
        if created and on_new_session is not None:
            others = tx.all("SELECT name FROM agents a WHERE a.id != ? AND EXISTS "
                            "(SELECT 1 FROM sessions s WHERE s.agent_id = a.id "
                            "AND s.key = ?) ORDER BY name", (agent_id, key))
            on_new_session([str(name) for (name,) in others])
    session = _rows.session(row)
    # Append first (it locks the session's row), then look at what it held and at its
    # runs: a message accepted concurrently is either seen here or comes after.
    records = append(tx, session.id, events, now)
    before = records[0].seq - 1
    if expect_seq is not None and before != expect_seq:
        raise Conflict(f"session {key!r} changed: its last seq is {before}, not "
                       f"{expect_seq}", code="session_changed",
                       details={"last_seq": before})
    busy = tx.one(f"SELECT id FROM runs WHERE session_id = ? AND {active()} "
                  "LIMIT 1", (session.id,))
    if busy is not None:
        raise SessionBusy(f"session {key!r} has run {busy[0]} queued or under way; "
                          "messages are added between runs", details={"active_run": busy[0]})
    session.last_seq, session.updated_at = records[-1].seq, now
    return session, records, created


def context(tx: Tx, session_id: str, seq: int | None = None,
            checkpoint: str | None = None) -> tuple[SessionRecord, int, str | None,
                                                     list[dict[str, Any]]]:
    """The state of ``session_id`` at a checkpoint or seq, as a fork copies it: the
    session, the seq, the checkpoint's id, and its live events (``{run_id, kind, data,
    at}``) in order, a compaction's range renumbered to their positions from 1."""
    row = tx.one(f"SELECT {SESSION_COLS} FROM sessions WHERE id = ?", (session_id,))
    if row is None:
        raise SessionNotFound("the session to fork does not exist (deleted?)")
    origin = _rows.session(row)
    to_seq, checkpoint_id = _target_seq(tx, session_id, origin.last_seq, seq, checkpoint)
    copied = [e for e in live_events([_rows.event(r) for r in tx.all(
        f"SELECT {EVENT_COLS} FROM events WHERE session_id = ? AND seq <= ? "
        "ORDER BY seq", (session_id, to_seq))]) if e.kind not in _NOT_COPIED]
    old_seqs = [e.seq for e in copied]
    return origin, to_seq, checkpoint_id, [
        {"run_id": e.run_id, "kind": e.kind,
         "data": _renumbered(e.data, old_seqs) if e.kind == _COMPACTED else e.data,
         "at": e.at} for e in copied]


def seed(tx: Tx, *, agent_id: str, new_session_id: str, key: str,
         events: Sequence[dict[str, Any]], policy: dict[str, Any] | None,
         forked: dict[str, Any], now: float) -> SessionRecord:
    """A new session ``key`` of the agent holding ``events`` (as :func:`context` gives
    them: renumbered from 1) and the session ``policy``, then a ``session.forked``
    event (``forked``: its data but ``copied_events``). :class:`SessionExists` when the
    key is taken."""
    tx.execute(
        f"INSERT INTO sessions ({SESSION_NEW}) VALUES (?, ?, ?, 0, ?, ?, 0, ?) "
        "ON CONFLICT (agent_id, key) DO NOTHING",
        (new_session_id, agent_id, key, now, now, now))
    if tx.rowcount == 0:
        raise SessionExists(f"session {key!r} already exists")
    if policy is not None:
        tx.execute("UPDATE sessions SET policy = ? WHERE id = ?",
                   (_rows.dumps(policy), new_session_id))
    if events:
        tx.executemany(INSERT_EVENT, [
            (new_session_id, i, e.get("run_id"), str(e["kind"]), _rows.dumps(e["data"]),
             float(e.get("at") or now))
            for i, e in enumerate(events, start=1)])
        tx.execute("UPDATE sessions SET last_seq = ? WHERE id = ?",
                   (len(events), new_session_id))
    append(tx, new_session_id, [NewEvent.of(SessionForked(data={
        "agent": forked["agent"], "session": forked["session"], "seq": forked["seq"],
        "checkpoint": forked.get("checkpoint"), "copied_events": len(events)}))], now)
    created = tx.one(f"SELECT {SESSION_COLS} FROM sessions WHERE id = ?", (new_session_id,))
    assert created is not None
    return _rows.session(created)


def fork(tx: Tx, session_id: str, *, new_session_id: str, key: str, seq: int | None,
         checkpoint: str | None, source: dict[str, Any], now: float) -> SessionRecord:
    """:meth:`Store.fork_session`'s transaction (see there)."""
    origin, to_seq, checkpoint_id, copied = context(tx, session_id, seq, checkpoint)
    return seed(tx, agent_id=origin.agent_id, new_session_id=new_session_id, key=key,
                events=copied, policy=origin.policy,
                forked={"agent": source["agent"], "session": source["session"],
                        "seq": to_seq, "checkpoint": checkpoint_id}, now=now)
