"""The WAL of a store whose commits never stop does not grow for as long as they last.

With ``synchronous = NORMAL`` the loop commits and a thread checkpoints; a checkpoint
that runs beside commits never copies the last of them, and SQLite starts the WAL
over only once everything in it is copied. Past ``WAL_RESTART_BYTES`` the checkpoint
holds the loop's writes back for a second pass, so the next commit starts the WAL
over. The loop never waits for it: a write issued meanwhile waits in its batch and
commits once the writes are let go. (The checkpoint is called directly here, from a
thread as the checkpoint thread does: no test waits on its timer.)
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from agentd.store import _sqlite
from agentd.store._sqlite import SqliteEngine
from agentd.store.engine import Tx


def _insert(n: int, size: int = 2000):
    def write(tx: Tx) -> int:
        tx.execute("INSERT INTO t (n, body) VALUES (?, ?)", (n, "x" * size))
        return n
    return write


async def _engine(path: Path) -> SqliteEngine:
    engine = SqliteEngine(str(path), synchronous="NORMAL")
    await engine.start()
    assert engine.writer == "loop"
    await engine.write(lambda tx: tx.execute(
        "CREATE TABLE t (n INTEGER PRIMARY KEY, body TEXT NOT NULL)"))
    return engine


def _frames(path: Path) -> int:
    """The frames in the WAL now (a checkpoint that copies nothing says so)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # (A FULL checkpoint would wait for the writer; NOOP only reports.)
        return int(conn.execute("PRAGMA wal_checkpoint(NOOP)").fetchone()[1])
    finally:
        conn.close()


async def test_a_wal_over_its_limit_starts_over_while_writes_go_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sqlite, "WAL_RESTART_BYTES", 64 * 4096)
    path = tmp_path / "a.db"
    engine = await _engine(path)
    conn = await asyncio.to_thread(engine._connect)
    n = 0

    async def commits(count: int) -> None:
        nonlocal n
        for _ in range(count):  # (one commit each)
            n += 1
            await engine.write(_insert(n))

    def passive() -> None:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    reader = await asyncio.to_thread(engine._connect)

    async def checkpoint_beside_commits() -> None:
        """A checkpoint that ran while commits went on: what it saw of the WAL when
        it began (a snapshot taken then, as a reader's) is all it may copy."""
        await asyncio.to_thread(lambda: (reader.execute("BEGIN"),
                                         reader.execute("SELECT count(*) FROM t")))
        await commits(5)
        await asyncio.to_thread(passive)
        await asyncio.to_thread(reader.execute, "COMMIT")

    try:
        # Without the second pass, the WAL goes on growing.
        for _ in range(3):
            await commits(40)
            await checkpoint_beside_commits()
        assert _frames(path) > 120
        # With it (what checkpoint() does past the limit): the next commit starts over.
        for _ in range(3):
            await commits(40)
            await checkpoint_beside_commits()
            await asyncio.to_thread(engine._restart_wal, conn)
            await commits(1)
            assert _frames(path) <= 8
        # checkpoint() itself: both passes once the WAL is over the limit, none under it.
        await commits(80)
        assert await asyncio.to_thread(engine.checkpoint, conn, 4096)
        await commits(1)
        assert _frames(path) <= 8
        assert not await asyncio.to_thread(engine.checkpoint, conn, 4096)
        count = await engine.read(lambda tx: tx.one("SELECT count(*) FROM t"))
        assert count == (n,)
    finally:
        reader.close()
        conn.close()
        await engine.close()


async def test_a_write_issued_while_the_writes_are_held_commits_once_let_go(
        tmp_path: Path) -> None:
    """The loop does not wait on the checkpoint: a write issued while it holds the
    writes stays in its batch (not committed, the loop free), and commits once the
    checkpoint lets go, whichever of the flush's two looks met the hold."""
    engine = await _engine(tmp_path / "a.db")
    try:
        for attempt in range(20):
            held, release = threading.Event(), threading.Event()

            def hold(held: threading.Event = held,
                     release: threading.Event = release) -> None:
                with engine._writing:
                    held.set()
                    release.wait(30)
                if engine._flush_wanted:  # (as _restart_wal does after letting go)
                    engine._flush_wanted = False
                    assert engine._loop is not None
                    engine._loop.call_soon_threadsafe(engine._flush)

            holder = threading.Thread(target=hold)
            holder.start()
            await asyncio.to_thread(held.wait, 30)
            pending = engine.write(_insert(attempt))
            # The loop keeps turning while the write waits.
            for _ in range(5):
                await asyncio.sleep(0)
            assert not pending.done()
            release.set()
            assert await asyncio.wait_for(pending, 30) == attempt
            await asyncio.to_thread(holder.join, 30)
        count = await engine.read(lambda tx: tx.one("SELECT count(*) FROM t"))
        assert count == (20,)
    finally:
        await engine.close()


async def test_closing_while_the_writes_are_held_commits_what_was_accepted(
        tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    engine = await _engine(path)
    release = threading.Event()
    held = threading.Event()

    def hold() -> None:
        with engine._writing:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    await asyncio.to_thread(held.wait, 30)
    pending = engine.write(_insert(1))
    await asyncio.sleep(0)
    closing = asyncio.create_task(engine.close())
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(closing, 30)
    await asyncio.to_thread(holder.join, 30)
    assert pending.done() and pending.result() == 1
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
    finally:
        conn.close()
