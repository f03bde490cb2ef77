"""The Store's fork methods: a session's context as a fork copies it, a session made
from such a copy, and the ``forks`` rows (:mod:`agentd.runtime.fork`).

A mixin so that ``store.py`` stays readable; :class:`agentd.store.Store` inherits it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from agentd.clock import Clock
from agentd.store import _sessions as _session_ops
from agentd.store import quota as _quota
from agentd.store.engine import Engine, Tx
from agentd.store.log import Accepted
from agentd.store.quota import Quota
from agentd.store.records import SessionRecord
from agentd.store.rows import dumps, new_id

__all__ = ["ForkRecord", "ForkStore"]

_COLS = "id, agent_id, session_id, run_id, source_run, spec, created_at"


@dataclass(kw_only=True, slots=True)
class ForkRecord:
    """A fork: its scratch session and run, the run it forked (None: an eval case's),
    and its spec (what its executor is built from)."""

    id: str
    agent_id: str
    session_id: str
    run_id: str
    source_run: str | None
    spec: dict[str, Any]
    created_at: float


def _fork(row: Sequence[Any]) -> ForkRecord:
    return ForkRecord(id=str(row[0]), agent_id=str(row[1]), session_id=str(row[2]),
                      run_id=str(row[3]), source_run=None if row[4] is None else str(row[4]),
                      spec=orjson.loads(row[5]), created_at=float(row[6]))


class ForkStore:
    engine: Engine
    clock: Clock

    async def session_context(self, session_id: str, seq: int) -> list[dict[str, Any]]:
        """The session's live events up to ``seq`` as a fork copies them (``{run_id,
        kind, data, at}``, a compaction's range renumbered from 1)."""
        return await self.engine.read(
            lambda tx: _session_ops.context(tx, session_id, seq)[3])

    async def seed_session(self, agent_id: str, key: str, events: Sequence[dict[str, Any]],
                           *, policy: dict[str, Any] | None, forked: dict[str, Any],
                           quota: Quota | None = None) -> SessionRecord:
        """A new session ``key`` of the agent holding ``events`` (as
        :meth:`session_context` gives them) and the session ``policy``, then a
        ``session.forked`` event with ``forked`` (``agent``, ``session``, ``seq``).
        :class:`~agentd.errors.SessionExists` when the key is taken; ``quota``: the
        tenant's limit on sessions."""
        now = self.clock.time()
        new_session_id = new_id("s")

        def op(tx: Tx) -> SessionRecord:
            made = _session_ops.seed(tx, agent_id=agent_id, new_session_id=new_session_id,
                                     key=key, events=events, policy=policy, forked=forked,
                                     now=now)
            _quota.check(tx, quota, self.engine.dialect)
            return made

        return await self.engine.write(op)

    def link_fork(self, fork_id: str, spec: dict[str, Any], source_run: str | None
                  ) -> Callable[[Tx, Accepted], None]:
        """The ``also`` of a fork's ``accept_message``: its row, committed with its
        message and run."""
        now = self.clock.time()
        text = dumps(spec)

        def link(tx: Tx, accepted: Accepted) -> None:
            tx.execute(f"INSERT INTO forks ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (fork_id, accepted.run.agent_id, accepted.session.id,
                        accepted.run.id, source_run, text, now))

        return link

    async def get_fork(self, fork_id: str) -> ForkRecord | None:
        row = await self.engine.read(
            lambda tx: tx.one(f"SELECT {_COLS} FROM forks WHERE id = ?", (fork_id,)))
        return None if row is None else _fork(row)

    async def fork_of_run(self, run_id: str) -> ForkRecord | None:
        """The fork whose run is ``run_id``, if any."""
        row = await self.engine.read(
            lambda tx: tx.one(f"SELECT {_COLS} FROM forks WHERE run_id = ?", (run_id,)))
        return None if row is None else _fork(row)
