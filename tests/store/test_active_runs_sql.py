"""The active-run condition (``rows.active``) on SQLite: the queries that name it are
served by runs_session_active, and no statement of a turn builds an ephemeral B-tree
for it (an IN list does, and so does the index's condition when it is one)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agentd.store import open_store
from agentd.store.log import _AHEAD, _SESSION_BY_KEY_BUSY
from agentd.store.rows import active


async def _db(tmp_path: Path) -> sqlite3.Connection:
    store = await open_store(f"sqlite:///{tmp_path / 'plan.db'}")
    await store.close()
    return sqlite3.connect(tmp_path / "plan.db")


def _plan(conn: sqlite3.Connection, sql: str) -> str:
    return " ".join(str(r[3]) for r in conn.execute(
        "EXPLAIN QUERY PLAN " + sql, [None] * sql.count("?")))


def _ephemeral(conn: sqlite3.Connection, sql: str) -> int:
    return sum(r[1] == "OpenEphemeral"
               for r in conn.execute("EXPLAIN " + sql, [None] * sql.count("?")))


async def test_the_active_run_lookups_use_the_partial_index(tmp_path: Path) -> None:
    conn = await _db(tmp_path)
    try:
        for sql in (
            f"SELECT id FROM runs WHERE session_id = ? AND {active()} "
            "ORDER BY queued_seq LIMIT 1",
            f"SELECT id FROM runs WHERE session_id = ? AND {active()} "
            "AND status <> 'queued' LIMIT 1",
            f"SELECT id FROM runs WHERE {active()} AND status <> 'queued' "
            "AND lease_expires_at < ?",
            f"UPDATE runs SET lease_owner = ? WHERE id = ? AND {active()} AND {_AHEAD}",
            _SESSION_BY_KEY_BUSY,
        ):
            assert "USING INDEX runs_session_active" in _plan(conn, sql), sql
            assert "TEMP B-TREE" not in _plan(conn, sql), sql
    finally:
        conn.close()


async def test_a_turns_run_writes_build_no_ephemeral_table(tmp_path: Path) -> None:
    conn = await _db(tmp_path)
    try:
        for sql in (
            "INSERT INTO runs (id, session_id, agent_id, status, input, created_at, "
            "queued_seq) VALUES (?, ?, ?, ?, ?, ?, ?)",
            "UPDATE runs SET status = ?, output = ?, finished_at = ?, "
            f"lease_expires_at = ? WHERE id = ? AND lease_owner = ? AND {active()}",
            f"SELECT id FROM runs WHERE session_id = ? AND {active()} "
            "ORDER BY queued_seq LIMIT 1",
        ):
            assert _ephemeral(conn, sql) == 0, sql
    finally:
        conn.close()
