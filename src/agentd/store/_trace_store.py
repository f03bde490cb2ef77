"""The Store's methods for traces (:mod:`agentd.telemetry`): a run's events, and which
finished runs have had their spans exported.

The exporter keeps a watermark (``trace_cursor``: every run created before it is
finished and exported) and the runs exported after it (``trace_exports``), so that
after a crash it exports what it had not, and little twice. Nothing here is written
unless traces are on.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentd.clock import Clock
from agentd.store import rows as _rows
from agentd.store.engine import Engine, Tx
from agentd.store.records import EventRecord, RunRecord
from agentd.store.rows import EVENT_COLS, RUN_COLS, active

__all__ = ["TraceStore"]

_CURSOR = "traces"


class TraceStore:
    engine: Engine
    clock: Clock

    async def run_events(self, run: RunRecord) -> list[EventRecord]:
        """The events of ``run`` in its session's log, oldest first (from the message
        that started it)."""
        first = max(0, (run.queued_seq or 1) - 1)
        rows = await self.engine.read(lambda tx: tx.all(
            f"SELECT {EVENT_COLS} FROM events WHERE session_id = ? AND seq >= ? "
            "AND run_id = ? ORDER BY seq", (run.session_id, first, run.id)))
        return [_rows.event(r) for r in rows]

    async def run_starter(self, run: RunRecord) -> EventRecord | None:
        """The ``message.user`` event that started ``run`` (None if it is gone)."""
        first = max(0, (run.queued_seq or 1) - 1)
        row = await self.engine.read(lambda tx: tx.one(
            f"SELECT {EVENT_COLS} FROM events WHERE session_id = ? AND seq >= ? "
            "AND run_id = ? AND kind = 'message.user' ORDER BY seq LIMIT 1",
            (run.session_id, first, run.id)))
        return _rows.event(row) if row else None

    async def runs_for_traces(self, run_ids: Sequence[str]
                              ) -> dict[str, tuple[RunRecord, str, str, list[EventRecord]]]:
        """Runs with their agent's name, their session's key and their events, in two
        queries whatever their number (the trace follower's batch): a run that is
        gone is left out."""
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return {}
        cols = ", ".join("r." + c.strip() for c in RUN_COLS.split(","))

        def op(tx: Tx) -> dict[str, tuple[RunRecord, str, str, list[EventRecord]]]:
            found: dict[str, tuple[RunRecord, str, str, list[EventRecord]]] = {}
            for start in range(0, len(ids), 200):
                part = ids[start:start + 200]
                rows = tx.all(
                    f"SELECT {cols}, a.name, s.key FROM runs r "
                    "JOIN agents a ON a.id = r.agent_id JOIN sessions s ON s.id = r.session_id "
                    f"WHERE r.id IN ({', '.join('?' * len(part))})", part)
                for row in rows:
                    run = _rows.run(row[:-2])
                    found[run.id] = (run, str(row[-2]), str(row[-1]), [])
            runs = [v[0] for v in found.values()]
            # One statement, a part per run, each found by the log's key.
            for start in range(0, len(runs), 50):
                batch = runs[start:start + 50]
                sql = " UNION ALL ".join(
                    f"SELECT * FROM (SELECT {EVENT_COLS} FROM events WHERE session_id = ? "
                    f"AND seq >= ? AND run_id = ? ORDER BY seq) t{i}" for i in range(len(batch)))
                params = [x for r in batch
                          for x in (r.session_id, max(0, (r.queued_seq or 1) - 1), r.id)]
                for row in tx.all(sql, params):
                    event = _rows.event(row)
                    if event.run_id in found:
                        found[event.run_id][3].append(event)
            for _, _, _, events in found.values():
                events.sort(key=lambda e: e.seq)
            return found

        return await self.engine.read(op)

    async def session_run_ids(self, session_id: str, limit: int = 1000) -> list[str]:
        """The runs of a session, oldest first (at most ``limit``)."""
        rows = await self.engine.read(lambda tx: tx.all(
            "SELECT id FROM runs WHERE session_id = ? ORDER BY created_at, id LIMIT ?",
            (session_id, limit)))
        return [str(r[0]) for r in rows]

    async def trace_watermark(self) -> float:
        """Where exporting resumes: the stored watermark, or now (set on first use:
        runs from before traces were turned on are not exported)."""
        now = self.clock.time()

        def op(tx: Tx) -> float:
            row = tx.one("SELECT created_at FROM trace_cursor WHERE name = ?", (_CURSOR,))
            if row is not None:
                return float(row[0])
            tx.execute("INSERT INTO trace_cursor (name, created_at) VALUES (?, ?)",
                       (_CURSOR, now))
            return now

        return await self.engine.write(op)

    async def unexported_runs(self, since: float, limit: int = 200) -> list[RunRecord]:
        """Finished runs created at or after ``since`` whose spans were not exported,
        oldest first."""
        rows = await self.engine.read(lambda tx: tx.all(
            f"SELECT {RUN_COLS} FROM runs r WHERE created_at >= ? "
            f"AND NOT {active()} AND NOT EXISTS "
            "(SELECT 1 FROM trace_exports t WHERE t.run_id = r.id) "
            "ORDER BY created_at, id LIMIT ?", (since, limit)))
        return [_rows.run(r) for r in rows]

    async def mark_exported(self, runs: Sequence[tuple[str, float]]) -> None:
        """Record that the spans of ``runs`` (id and creation time) were exported."""
        if not runs:
            return

        def op(tx: Tx) -> None:
            tx.executemany(
                "INSERT INTO trace_exports (run_id, created_at) VALUES (?, ?) "
                "ON CONFLICT (run_id) DO NOTHING", [(run_id, at) for run_id, at in runs])

        await self.engine.write(op)

    async def advance_trace_watermark(self, upto: float) -> float:
        """Move the watermark to the oldest active run's creation (at most ``upto``) and
        forget the exports before it; the new watermark."""

        def op(tx: Tx) -> float:
            row = tx.one(f"SELECT MIN(created_at) FROM runs WHERE {active()}")
            mark = upto if row is None or row[0] is None else min(upto, float(row[0]))
            old = tx.one("SELECT created_at FROM trace_cursor WHERE name = ?", (_CURSOR,))
            if old is not None and float(old[0]) >= mark:
                return float(old[0])
            tx.execute("UPDATE trace_cursor SET created_at = ? WHERE name = ?",
                       (mark, _CURSOR))
            tx.execute("DELETE FROM trace_exports WHERE created_at < ?", (mark,))
            return mark

        return await self.engine.write(op)
