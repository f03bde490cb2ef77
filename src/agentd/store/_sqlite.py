"""SQLite engine: one writer thread with group commit, a small pool of readers.

Writes from every coroutine go to one thread that drains its queue, runs each
write in its own SAVEPOINT inside one ``BEGIN IMMEDIATE`` transaction and commits
once for the whole batch (group commit). A write is acknowledged only after that
COMMIT. With 16 clients that turns 16 commits into one, which is where most of the
throughput comes from. A failing write rolls back its savepoint only.

WAL mode with ``synchronous=NORMAL``: a commit survives a crash of the process
(kill -9); the last commits before a power loss may not. ``AGENTD_SQLITE_SYNCHRONOUS
=FULL`` trades throughput for that too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from agentd.store._engine import Engine, Tx

__all__ = ["SqliteEngine"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_MAX_BATCH = 512
_READERS = 4


def _identity(sql: str) -> str:
    return sql


class _Job:
    __slots__ = ("fn", "future", "loop")

    def __init__(self, fn: Callable[[Tx], Any], loop: asyncio.AbstractEventLoop,
                 future: asyncio.Future[Any]) -> None:
        self.fn = fn
        self.loop = loop
        self.future = future


def _settle(results: list[tuple[asyncio.Future[Any], BaseException | None, Any]]) -> None:
    for future, exc, value in results:
        if future.done():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)


class SqliteEngine(Engine):
    dialect = "sqlite"
    types = {"real": "REAL", "bigint": "INTEGER", "text": "TEXT"}

    def __init__(self, path: str, *, synchronous: str | None = None) -> None:
        self.path = path
        self.synchronous = (synchronous or os.environ.get("AGENTD_SQLITE_SYNCHRONOUS")
                            or "NORMAL").upper()
        if self.synchronous not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"AGENTD_SQLITE_SYNCHRONOUS must be OFF, NORMAL, FULL or EXTRA, "
                             f"not {self.synchronous!r}")
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        return conn

    async def start(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = await asyncio.to_thread(self._connect)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal" and self.path != ":memory:":
            log.warning("SQLite refused WAL mode (got %s); writes will be slower", mode)
        self._writer = threading.Thread(
            target=self._write_loop, args=(conn,), name="agentd-sqlite-writer", daemon=True
        )
        self._writer.start()
        self._readers = ThreadPoolExecutor(_READERS, thread_name_prefix="agentd-sqlite-read")

    async def close(self) -> None:
        if self._writer is not None:
            self._jobs.put(None)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        if self._readers is not None:
            self._readers.shutdown(wait=True)
            self._readers = None
        with self._lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()

    # -- writes --------------------------------------------------------------------

    async def write(self, fn: Callable[[Tx], T]) -> T:
        if self._writer is None:
            raise RuntimeError("store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put(_Job(fn, loop, future))
        return await future

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        cur = conn.cursor()
        tx = Tx(cur, _identity)
        try:
            while True:
                first = self._jobs.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                while len(batch) < _MAX_BATCH:
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        stop = True
                        break
                    batch.append(job)
                self._run_batch(conn, cur, tx, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, cur: sqlite3.Cursor, tx: Tx,
                   batch: list[_Job]) -> None:
        outcomes: list[tuple[_Job, BaseException | None, Any]] = []
        try:
            cur.execute("BEGIN IMMEDIATE")
            for job in batch:
                cur.execute("SAVEPOINT job")
                try:
                    value = job.fn(tx)
                except BaseException as exc:  # the job's own error goes to its caller
                    cur.execute("ROLLBACK TO job")
                    cur.execute("RELEASE job")
                    outcomes.append((job, exc, None))
                else:
                    cur.execute("RELEASE job")
                    outcomes.append((job, None, value))
            cur.execute("COMMIT")
        except BaseException as batch_exc:
            log.exception("SQLite batch of %d writes failed", len(batch))
            if conn.in_transaction:
                conn.rollback()
            outcomes = [(job, batch_exc, None) for job in batch]
        by_loop: dict[asyncio.AbstractEventLoop,
                      list[tuple[asyncio.Future[Any], BaseException | None, Any]]] = {}
        for job, error, value in outcomes:
            by_loop.setdefault(job.loop, []).append((job.future, error, value))
        for loop, results in by_loop.items():
            if not loop.is_closed():
                loop.call_soon_threadsafe(_settle, results)

    # -- reads ---------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._lock:
                self._reader_conns.append(conn)
        return conn

    def _read_sync(self, fn: Callable[[Tx], T]) -> T:
        conn = self._reader()
        cur = conn.cursor()
        cur.execute("BEGIN")
        try:
            return fn(Tx(cur, _identity))
        finally:
            cur.execute("COMMIT")
            cur.close()

    async def read(self, fn: Callable[[Tx], T]) -> T:
        if self._readers is None:
            raise RuntimeError("store is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._read_sync, fn)

    # -- dialect hooks ---------------------------------------------------------------

    def is_unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc)

    def run_script(self, tx: Tx, sql: str) -> None:
        for statement in sql.split(";"):
            if statement.strip():
                tx.execute(statement)
