"""The SQLite writer thread's linger under load (``synchronous = FULL``): after a batch
of at least ``LINGER_COMPANY`` writes, the next batch waits ``THREAD_LINGER_S`` after its
first write, so that the writes sent meanwhile share its commit; after a smaller batch
no write waits. The test holds the linger open itself (the engine's ``linger`` hook)
and holds the writer inside a write to form a batch: nothing here is timed."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from agentd.store._sqlite import LINGER_COMPANY, THREAD_LINGER_S, SqliteEngine
from agentd.store.engine import Tx

WAIT_S = 30.0


def _insert(value: int) -> Any:
    def op(tx: Tx) -> None:
        tx.execute("INSERT INTO t (x) VALUES (?)", (value,))
    return op


async def test_the_writer_lingers_only_after_a_batch_with_company(tmp_path: Path) -> None:
    engine = SqliteEngine(str(tmp_path / "a.db"), synchronous="FULL")
    assert (engine.synchronous, engine.writer) == ("FULL", "thread")
    commits: list[int] = []
    engine.on_commit = lambda seconds, writes: commits.append(writes)
    lingered: list[float] = []
    lingering = threading.Event()
    go = threading.Event()

    def linger(seconds: float) -> None:
        lingered.append(seconds)
        lingering.set()
        assert go.wait(WAIT_S)

    engine.linger = linger
    inside = threading.Event()
    release = threading.Event()

    def hold(tx: Tx) -> None:
        inside.set()
        assert release.wait(WAIT_S)
        tx.execute("INSERT INTO t (x) VALUES (0)")

    await engine.start()
    try:
        await engine.write(lambda tx: tx.execute("CREATE TABLE t (x INTEGER)"))
        # A batch of LINGER_COMPANY writes: they queue while the writer is held
        # inside the write before them, and commit together once it lets go.
        held = engine.write(hold)
        assert await asyncio.to_thread(inside.wait, WAIT_S)
        burst = [engine.write(_insert(i)) for i in range(1, LINGER_COMPANY + 1)]
        release.set()
        await asyncio.gather(held, *burst)
        assert commits == [1, 1, LINGER_COMPANY]
        assert lingered == []  # (no batch before these held company)

        # The next write follows a batch with company: the writer lingers, and the
        # writes sent while it does share its commit.
        first = engine.write(_insert(10))
        assert await asyncio.to_thread(lingering.wait, WAIT_S)
        later = [engine.write(_insert(11)), engine.write(_insert(12))]
        go.set()
        await asyncio.gather(first, *later)
        assert lingered == [THREAD_LINGER_S]
        assert commits[-1] == 3

        # Three is less company than LINGER_COMPANY: the next write does not wait.
        await engine.write(_insert(20))
        assert lingered == [THREAD_LINGER_S]
        assert commits[-1] == 1
        rows = await engine.read(lambda tx: tx.all("SELECT x FROM t ORDER BY x"))
        assert [row[0] for row in rows] == [0, *range(1, LINGER_COMPANY + 1), 10, 11, 12, 20]
    finally:
        go.set()
        release.set()
        await engine.close()


async def test_a_lone_writer_never_lingers(tmp_path: Path) -> None:
    engine = SqliteEngine(str(tmp_path / "a.db"), synchronous="FULL")
    lingered: list[float] = []
    engine.linger = lingered.append
    await engine.start()
    try:
        await engine.write(lambda tx: tx.execute("CREATE TABLE t (x INTEGER)"))
        for i in range(3 * LINGER_COMPANY):
            await engine.write(_insert(i))
    finally:
        await engine.close()
    assert lingered == []
