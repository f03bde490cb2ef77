"""An agent's revisions: its model, instructions, tools and settings at each change.

Written in the transaction that creates or changes the agent (a change of its state
alone is no revision); read by a replay, which runs with what the run it replays
started with (:mod:`agentd.runtime.replay`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from agentd.store import rows as _rows
from agentd.store.engine import Engine, Tx
from agentd.store.records import AgentRecord

__all__ = ["RevisionStore", "note_revision"]

_FIELDS = frozenset({"model", "instructions", "tools", "settings"})


def note_revision(tx: Tx, agent: AgentRecord, fields: Iterable[str] = _FIELDS) -> None:
    """Record ``agent`` as it is now, if ``fields`` (what changed) touch a revision."""
    if _FIELDS.isdisjoint(fields):
        return
    tx.execute(
        "INSERT INTO agent_revisions (agent_id, at, model, instructions, tools, settings) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (agent_id, at) DO NOTHING",
        (agent.id, agent.updated_at, agent.model, agent.instructions,
         orjson.dumps(agent.tools).decode(), orjson.dumps(agent.settings).decode()))


class RevisionStore:
    engine: Engine

    async def agent_as_of(self, agent_id: str, at: float) -> AgentRecord | None:
        """The agent as its last revision made at or before ``at`` had it (its state
        and times as they are now); None when no revision is that old."""
        def op(tx: Tx) -> AgentRecord | None:
            row = tx.one(f"SELECT {_rows.AGENT_COLS} FROM agents WHERE id = ?", (agent_id,))
            revision = tx.one(
                "SELECT model, instructions, tools, settings FROM agent_revisions "
                "WHERE agent_id = ? AND at <= ? ORDER BY at DESC LIMIT 1", (agent_id, at))
            if row is None or revision is None:
                return None
            agent = _rows.agent(row)
            agent.model, agent.instructions = str(revision[0]), str(revision[1])
            agent.tools, agent.settings = orjson.loads(revision[2]), orjson.loads(revision[3])
            return agent

        return await self.engine.read(op)

    async def agent_settings_between(self, agent_id: str, since: float, until: float
                                     ) -> list[tuple[float, dict[str, Any]]]:
        """The settings of the agent's revisions made after ``since`` and up to
        ``until`` (a change while a run ran: a rule remembered at an approval), oldest
        first, with when each was made."""
        rows = await self.engine.read(lambda tx: tx.all(
            "SELECT at, settings FROM agent_revisions WHERE agent_id = ? AND at > ? "
            "AND at <= ? ORDER BY at", (agent_id, since, until)))
        return [(float(at), orjson.loads(settings)) for at, settings in rows]
