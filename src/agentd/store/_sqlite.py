"""SQLite engine: group commit, with the writer on the event loop or on a thread.

Writes are batched: every write issued while the previous batch was being
committed runs inside one ``BEGIN IMMEDIATE`` transaction, committed once for the
whole batch (group commit). A write is acknowledged only after that COMMIT. If one
write of a batch fails, the batch is rolled back and replayed with each write in its
own SAVEPOINT, so only the failing write is lost (write functions must be safe to
re-run: they are pure functions of the transaction).

Where the batch runs depends on what a commit costs (``[store] synchronous``; the
database is always in WAL mode):

* ``synchronous=FULL`` (the default): every commit fsyncs the WAL, so an acknowledged
  write survives an OS crash or power loss; batches run on a dedicated writer thread
  and the loop never waits on the disk. Under load (the last batch held at least
  :data:`LINGER_COMPANY` writes) the thread lingers :data:`THREAD_LINGER_S` after a
  batch's first write before it begins, so that the writes of the turns under way
  meanwhile share its commit and fsync, and the loop has the GIL to itself for that
  time: a waited echo turn at 8 and 16 clients cost 8-17 % less CPU, with more turns
  a second and no slower p50 (docs/benchmarks.md, "The writer thread lingers under
  load"). One or two writers at once never wait.
* ``synchronous=NORMAL``: a commit appends to the WAL without fsync and costs tens of
  microseconds, less than handing work to a thread and back. The batch runs on the
  event loop (``call_soon``), and WAL checkpoints, the only step that fsyncs, run on a
  background thread with their own connection. A commit survives kill -9 of the
  process; the last commits before a power loss may not.

  A checkpoint that runs while commits go on never copies the last of them, so the
  WAL, which SQLite starts over only once everything in it is copied, would grow for
  as long as the load lasted (half a gigabyte in 16 s of the turns bench), every
  commit appending to a longer file (a page written to a longer file cost about a
  microsecond and a half more of system time here). Once the WAL is over
  :data:`WAL_RESTART_BYTES`, the checkpoint thread holds the loop's writes back for
  a second, short pass (what was committed during the first, and the syncs): the loop
  never waits, writes wait in their batch, and the next commit starts the WAL over.

docs/design-notes.md has the measurements behind both choices. ``OFF`` (which can
corrupt the database on power loss) and ``EXTRA`` (the same syncs as ``FULL`` in WAL
mode) are refused.

Reads run on a small pool of reader threads (WAL lets them read while a write
commits).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from agentd.store.engine import Engine, Tx

__all__ = ["SqliteEngine"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: ``PRAGMA synchronous`` levels taken (agentd.settings.store.SQLITE_LEVELS), the one
#: used when none is given, and what the PRAGMA reads back as.
LEVELS = ("NORMAL", "FULL")
DEFAULT_SYNCHRONOUS = "FULL"
_READ_BACK = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
_MAX_BATCH = 512
_READERS = 4
_CHECKPOINT_EVERY_S = 1.0
#: The WAL's size past which the checkpoint thread holds the loop's writes back for
#: a short second pass, so that the next commit starts the WAL over (see above).
WAL_RESTART_BYTES = 16 << 20
_LINGER_S = 0.0005
#: The writer thread's linger under load (see the module's docstring): how long, and
#: how many writes the last batch must have held for the next one to wait.
THREAD_LINGER_S = 0.001
LINGER_COMPANY = 4
WRITER_CACHE_MB = 64


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
    types = {"real": "REAL", "bigint": "INTEGER", "text": "TEXT", "clustered": " WITHOUT ROWID"}

    def __init__(self, path: str, *, synchronous: str | None = None,
                 writer: str | None = None, cache_mb: int = WRITER_CACHE_MB) -> None:
        """``synchronous`` (None: ``FULL``), ``writer`` and ``cache_mb``: the daemon's
        ``[store] synchronous`` and ``sqlite_*`` settings
        (:class:`agentd.store.StoreOptions`)."""
        self.path = path
        self.synchronous = (synchronous or DEFAULT_SYNCHRONOUS).strip().upper()
        if self.synchronous not in LEVELS:
            raise ValueError(f"SQLite's synchronous must be NORMAL or FULL, not "
                             f"{synchronous!r}")
        default_writer = "loop" if self.synchronous == "NORMAL" else "thread"
        self.writer = writer or default_writer
        if self.writer not in {"loop", "thread"}:
            raise ValueError(f"sqlite_writer must be loop or thread, not {self.writer!r}")
        if isinstance(cache_mb, bool) or not isinstance(cache_mb, int) \
                or not 2 <= cache_mb <= 65536:
            raise ValueError("sqlite_cache_mb must be a whole number of MiB from 2 to "
                             f"65536, not {cache_mb!r}")
        self.cache_mb = cache_mb
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._conn: sqlite3.Connection | None = None
        self._cur: sqlite3.Cursor | None = None
        self._pending: list[_Job] = []
        self._flush_scheduled = False
        self._last_batch = 0
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()
        self._writer: threading.Thread | None = None
        #: Held by the loop while it runs a batch, and by the checkpoint thread while
        #: it holds the writes back (the loop never waits on it: see _flush).
        self._writing = threading.Lock()
        #: Set by the checkpoint thread when a flush found the writes held back.
        self._flush_wanted = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        #: How the writer thread lingers (time.sleep; tests hold it to see a batch form).
        self.linger: Callable[[float], None] = time.sleep

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        return conn

    async def start(self) -> None:
        await asyncio.to_thread(_private, Path(self.path))
        conn = await asyncio.to_thread(self._connect)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            log.warning("SQLite refused WAL mode (got %s); writes will be slower", mode)
        level = _READ_BACK.get(conn.execute("PRAGMA synchronous").fetchone()[0])
        if level != self.synchronous:
            conn.close()
            raise RuntimeError(f"SQLite runs at synchronous = {level} after being set to "
                               f"{self.synchronous}")
        # The writer's page cache: a burst writes rows all over the sessions', runs'
        # and events' B-trees (random ids); with SQLite's default 2 MB most of its page
        # visits miss (docs/benchmarks.md, schedules). Readers keep the default.
        conn.execute(f"PRAGMA cache_size = {-1024 * self.cache_mb}")
        # A WAL started over is cut back to this size (a burst's does not stay).
        conn.execute(f"PRAGMA journal_size_limit = {4 * WAL_RESTART_BYTES}")
        if self.writer == "loop":
            # Checkpoints (the only fsyncs) move to a thread; commits stay cheap.
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            self._conn, self._cur = conn, conn.cursor()
            self._loop = asyncio.get_running_loop()
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, name="agentd-sqlite-checkpoint", daemon=True)
            self._checkpointer.start()
        else:
            self._writer = threading.Thread(
                target=self._write_loop, args=(conn,), name="agentd-sqlite-writer",
                daemon=True)
            self._writer.start()
        self._readers = ThreadPoolExecutor(_READERS, thread_name_prefix="agentd-sqlite-read")

    def _checkpoint_loop(self) -> None:
        conn = self._connect()
        page = int(conn.execute("PRAGMA page_size").fetchone()[0])
        try:
            while not self._stop_checkpoints.wait(_CHECKPOINT_EVERY_S):
                try:
                    self.checkpoint(conn, page)
                except sqlite3.Error:
                    log.warning("WAL checkpoint failed; will retry", exc_info=True)
        finally:
            conn.close()

    def checkpoint(self, conn: sqlite3.Connection, page: int) -> bool:
        """One checkpoint (the checkpoint thread's, every second), on ``conn``, a
        connection of the caller's thread; True when the WAL was over
        :data:`WAL_RESTART_BYTES` and the writes were held back for a second pass."""
        _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames * page <= WAL_RESTART_BYTES:
            return False
        self._restart_wal(conn)
        return True

    def _restart_wal(self, conn: sqlite3.Connection) -> None:
        """Copy what the last checkpoint left while the loop's writes are held back,
        so that the next commit starts the WAL over (see the module's docstring)."""
        try:
            with self._writing:  # (the loop's batch, if one runs, ends first)
                busy, frames, copied = conn.execute(
                    "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            # Read after letting go: a flush that found the writes held back said so
            # before its second look, which it made before this point or which finds
            # the lock free (see _flush).
            if self._flush_wanted:
                self._flush_wanted = False
                loop = self._loop
                if loop is not None and not loop.is_closed():
                    loop.call_soon_threadsafe(self._flush)
        if busy or frames != copied:
            log.debug("WAL checkpoint could not copy everything (a reader holds it)")

    async def close(self) -> None:
        if self._conn is not None:
            # The checkpoint thread first: it may hold the writes back for a moment.
            self._stop_checkpoints.set()
            if self._checkpointer is not None:
                await asyncio.to_thread(self._checkpointer.join)
                self._checkpointer = None
            # (Whoever holds the writes back lets go first: the loop does not wait.)
            await asyncio.to_thread(self._writing.acquire)
            self._writing.release()
            while self._pending:  # commit what was accepted before closing
                self._flush()
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = self._cur = None
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

    def write(self, fn: Callable[[Tx], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        job = _Job(fn, loop, future)
        if self._conn is not None:
            self._pending.append(job)
            if not self._flush_scheduled:
                # Everything written during this turn of the loop commits together.
                # Under concurrent load (the last batch had company) wait up to
                # _LINGER_S for more writes: fewer, larger commits (docs/benchmarks.md).
                self._flush_scheduled = True
                if self._last_batch > 1:
                    loop.call_later(_LINGER_S, self._flush)
                else:
                    loop.call_soon(self._flush)
        elif self._writer is not None:
            self._jobs.put(job)
        else:
            raise RuntimeError("store is not open")
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._conn is None or not self._pending:
            return
        if not self._writing.acquire(blocking=False):
            # The checkpoint thread holds the writes back for a moment: it flushes
            # when it lets go (the loop does not wait on it).
            self._flush_wanted = True
            if self._writing.acquire(blocking=False):
                # (It let go between the two looks, and may have missed the wish.)
                self._flush_wanted = False
            else:
                return
        try:
            batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
            self._last_batch = len(batch)
            if self._pending:
                self._flush_scheduled = True
                batch[0].loop.call_soon(self._flush)
            assert self._cur is not None
            outcomes = self._execute(self._conn, self._cur, batch)
        finally:
            self._writing.release()
        for future, error, value in outcomes:
            if not future.done():
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(value)

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        cur = conn.cursor()
        last = 0
        try:
            while True:
                first = self._jobs.get()
                if first is None:
                    return
                if last >= LINGER_COMPANY:
                    # Others are writing: let their writes join this commit and its
                    # fsync (the loop meanwhile runs without handing the GIL over).
                    self.linger(THREAD_LINGER_S)
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
                last = len(batch)
                self._run_batch(conn, cur, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, cur: sqlite3.Cursor,
                   batch: list[_Job]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop,
                      list[tuple[asyncio.Future[Any], BaseException | None, Any]]] = {}
        for outcome in self._execute(conn, cur, batch):
            by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
        for loop, results in by_loop.items():
            if not loop.is_closed():
                loop.call_soon_threadsafe(_settle, results)

    def _execute(self, conn: sqlite3.Connection, cur: sqlite3.Cursor, batch: list[_Job]
                 ) -> list[tuple[asyncio.Future[Any], BaseException | None, Any]]:
        tx = Tx(cur)
        outcomes: list[tuple[_Job, BaseException | None, Any]] = []
        began = time.perf_counter()
        try:
            cur.execute("BEGIN IMMEDIATE")
            try:
                # Optimistic: the whole batch in one transaction with no savepoints.
                outcomes = [(job, None, job.fn(tx)) for job in batch]
            except BaseException:
                # Some write failed (rare: a unique name taken, a session deleted).
                # Start over with each write in its own savepoint, so only the
                # failing one is rolled back; write functions are safe to re-run.
                conn.rollback()
                cur.execute("BEGIN IMMEDIATE")
                outcomes = []
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
        else:
            if self.on_commit is not None:
                self._told(time.perf_counter() - began, len(batch))
        return [(job.future, error, value) for job, error, value in outcomes]

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
            return fn(Tx(cur))
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
        # A trigger's body holds semicolons: a statement ends at the first ';' after
        # which SQLite sees a complete statement.
        statement = ""
        for piece in sql.split(";"):
            statement += piece + ";"
            if sqlite3.complete_statement(statement):
                if statement.strip(" \t\n;"):
                    tx.execute(statement)
                statement = ""
        if statement.strip(" \t\n;"):
            tx.execute(statement)


def _private(path: Path) -> None:
    """Create the database file 0600 (or close an existing one to other users) before
    SQLite opens it: SQLite gives its -wal and -shm files the database file's mode."""
    if str(path) == ":memory:":
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            side = path.with_name(path.name + suffix)
            if side.stat().st_mode & 0o077:
                os.chmod(side, 0o600)
