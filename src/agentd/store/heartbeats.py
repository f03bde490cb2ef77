"""Heartbeat claims and proactive posts: SQL run inside the transactions of
:mod:`agentd.autonomy.heartbeat` and :mod:`agentd.autonomy.proactive`, and the
:class:`HeartbeatStore` mixin :class:`agentd.store.Store` inherits.

``heartbeats`` holds one row per agent that ever beat (or was skipped): the last beat
slot claimed (``beat_at``, epoch seconds aligned to the period) and its run, and the
last skip. A beat is claimed by an upsert that only moves ``beat_at`` forward, in the
transaction that logs the beat's message and queues its run
(``Store.accept_message(also=...)``): two nodes (or a restart) computing the same slot
commit it once; a node whose clock lags can never fire an older slot again.

``proactive_posts`` has one row per post, keyed by the posting run and the tool call's
effect id (unique per step and call, the same when the call is re-run), in the
transaction that appends the ``message.proactive`` event: a call re-run after a crash
posts nothing twice, and the per-run cap counts what is committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from agentd.clock import Clock
from agentd.store.engine import Engine, Tx
from agentd.store.log import append
from agentd.store.records import EventRecord, NewEvent
from agentd.store.rows import active

__all__ = [
    "AlreadyBeaten",
    "AlreadyPosted",
    "BeatState",
    "Busy",
    "HeartbeatStore",
    "PostCapReached",
    "claim_beat",
]


class AlreadyBeaten(Exception):
    """The slot (or a later one) was claimed already (another node, or before a restart)."""


class Busy(Exception):
    """The agent has another active or queued run: the beat is skipped."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id


class AlreadyPosted(Exception):
    """This tool call (by its effect id) posted already (a re-run after a crash)."""


class PostCapReached(Exception):
    """The run posted its maximum number of proactive messages."""


@dataclass(kw_only=True, slots=True)
class BeatState:
    """An agent's heartbeat as stored: its last beat (slot, run, the run's status and
    output) and its last skip."""

    beat_at: float | None = None
    run_id: str | None = None
    run_status: str | None = None
    run_output: str | None = None
    skip_at: float | None = None
    skip_reason: str | None = None


def claim_beat(tx: Tx, agent_id: str, beat_at: float, run_id: str) -> None:
    """Claim ``beat_at`` for the agent's heartbeat, with ``run_id`` its run; raise
    :class:`Busy` if another run of the agent is active or queued, and
    :class:`AlreadyBeaten` if this slot or a later one was claimed."""
    # The partial index's condition term for term (it holds active runs only).
    busy = tx.one(f"SELECT id FROM runs WHERE {active()} AND agent_id = ? "
                  "AND id <> ? LIMIT 1", (agent_id, run_id))
    if busy is not None:
        raise Busy(str(busy[0]))
    tx.execute(
        "INSERT INTO heartbeats (agent_id, beat_at, run_id) VALUES (?, ?, ?) "
        "ON CONFLICT (agent_id) DO UPDATE SET beat_at = excluded.beat_at, "
        "run_id = excluded.run_id WHERE heartbeats.beat_at < excluded.beat_at",
        (agent_id, beat_at, run_id))
    if tx.rowcount == 0:
        raise AlreadyBeaten(f"{agent_id} @ {beat_at}")


def _skip(tx: Tx, agent_id: str, reason: str, now: float) -> None:
    tx.execute(
        "INSERT INTO heartbeats (agent_id, beat_at, skip_at, skip_reason) "
        "VALUES (?, 0, ?, ?) ON CONFLICT (agent_id) DO UPDATE SET "
        "skip_at = excluded.skip_at, skip_reason = excluded.skip_reason",
        (agent_id, now, reason))


def _state(tx: Tx, agent_id: str) -> BeatState:
    row = tx.one("SELECT h.beat_at, h.run_id, r.status, r.output, h.skip_at, h.skip_reason "
                 "FROM heartbeats h LEFT JOIN runs r ON r.id = h.run_id "
                 "WHERE h.agent_id = ?", (agent_id,))
    if row is None:
        return BeatState()
    return BeatState(beat_at=float(row[0]) or None, run_id=row[1], run_status=row[2],
                     run_output=row[3], skip_at=None if row[4] is None else float(row[4]),
                     skip_reason=row[5])


def _post(tx: Tx, *, session_id: str, event: NewEvent, run_id: str, effect_id: str,
          cap: int, now: float) -> list[EventRecord]:
    if tx.one("SELECT 1 FROM proactive_posts WHERE run_id = ? AND effect_id = ?",
              (run_id, effect_id)) is not None:
        raise AlreadyPosted(f"{run_id}/{effect_id}")
    row = tx.one("SELECT COUNT(*) FROM proactive_posts WHERE run_id = ?", (run_id,))
    if row is not None and int(row[0]) >= cap:
        raise PostCapReached(str(cap))
    records = append(tx, session_id, [event], now)
    tx.execute("INSERT INTO proactive_posts (run_id, effect_id, session_id, seq, at) "
               "VALUES (?, ?, ?, ?, ?)", (run_id, effect_id, session_id, records[0].seq, now))
    return records


class HeartbeatStore:
    """The Store's heartbeat and proactive-post methods (one transaction each)."""

    engine: Engine
    clock: Clock

    async def beat_state(self, agent_id: str) -> BeatState:
        return await self.engine.read(lambda tx: _state(tx, agent_id))

    async def record_beat_skip(self, agent_id: str, reason: str) -> None:
        now = self.clock.time()
        await self.engine.write(lambda tx: _skip(tx, agent_id, reason, now))

    async def heartbeat_candidates(self) -> list[tuple[str, str, dict[str, Any]]]:
        """``(id, name, settings)`` of the agents whose settings mention a heartbeat
        (a text match: only those rows' JSON is parsed, however many agents there are)."""
        rows = await self.engine.read(lambda tx: tx.all(
            "SELECT id, name, settings FROM agents WHERE settings LIKE ?",
            ('%"heartbeat"%',)))
        return [(str(r[0]), str(r[1]), orjson.loads(r[2])) for r in rows]

    async def post_proactive(self, *, session_id: str, event: NewEvent, run_id: str,
                             effect_id: str, cap: int) -> list[EventRecord]:
        """Append ``event`` (a ``message.proactive``) to the session, recorded as the
        post of ``run_id``'s call ``effect_id``; :class:`AlreadyPosted` or
        :class:`PostCapReached` write nothing."""
        now = self.clock.time()
        return await self.engine.write(lambda tx: _post(
            tx, session_id=session_id, event=event, run_id=run_id, effect_id=effect_id,
            cap=cap, now=now))

    async def posts_of_run(self, run_id: str) -> Sequence[tuple[str, int]]:
        """``(session_id, seq)`` of each proactive post of the run, in order."""
        rows = await self.engine.read(lambda tx: tx.all(
            "SELECT session_id, seq FROM proactive_posts WHERE run_id = ? ORDER BY at, seq",
            (run_id,)))
        return [(str(r[0]), int(r[1])) for r in rows]
