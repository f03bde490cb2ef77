"""PostgreSQL engine: psycopg 3 with a connection pool, one transaction per write.

Concurrent writers run in parallel on their own connections; the per-session
``last_seq`` row lock (``UPDATE ... RETURNING``) serialises appends to one session's
log, the same statement SQLite runs under its single writer. The same statement
NOTIFYs the new last seq, so that every node sharing the database can stream every
session live (:meth:`PostgresEngine.listen`). Changes to agents are announced on a
channel of their own (``agentd_agents``), in the transaction that makes them, so that
every node's activity feed hears of them and a rolled-back change says nothing.

Every connection runs at the daemon's ``[store] synchronous`` (the session's
``synchronous_commit``, set when the pool opens the connection; ``on`` by default,
whatever the server's or the role's default is): docs/operations.md, "Durability".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from agentd.store.engine import Engine, Row, Tx
from agentd.store.node_lock import KEEPALIVES, NodeLock

__all__ = ["PostgresEngine"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_POOL_MAX = 16
#: Every append to a session's log notifies this channel with ``<session id>:<last seq>``
#: (delivered at commit, at no extra round trip): other nodes stream it live.
CHANNEL = "agentd_events"
_NOTIFY = f", pg_notify('{CHANNEL}', id || ':' || last_seq)"
#: Every change to an agent's record notifies this channel with ``<schema>\n<note>``
#: (the note: ``AgentChange.to_note``); a channel of its own leaves the one above as it
#: was. Channels are database-wide: the schema keeps daemons that share a database but
#: not a schema from hearing each other's agents.
AGENTS_CHANNEL = "agentd_agents"
#: Every cancel asked of the node driving a run (``Store.request_cancel``) notifies
#: this channel with ``<schema>\n<run id>``: that node cancels it at once rather than
#: at its next lease renewal.
CANCELS_CHANNEL = "agentd_cancels"
#: ``synchronous_commit`` levels taken (agentd.settings.store.POSTGRES_LEVELS), and the
#: one used when none is given.
LEVELS = ("remote_apply", "on", "remote_write", "local", "off")
DEFAULT_SYNCHRONOUS = "on"
_SET_LEVEL = "SELECT set_config('synchronous_commit', %s, false)"


@lru_cache(maxsize=512)
def _translate(sql: str) -> str:
    # Our SQL has no literal '?' or '%': swap placeholder style only.
    return re.sub(r"\?", "%s", sql)


class _PgTx(Tx):
    """PostgreSQL's :class:`Tx`: the statements' ``?`` placeholders become psycopg's
    ``%s``."""

    __slots__ = ()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cur.execute(_translate(sql), params)

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self._cur.execute(_translate(sql), params)
        return list(self._cur.fetchall())

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        self._cur.execute(_translate(sql), params)
        row: Row | None = self._cur.fetchone()
        return row

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._cur.executemany(_translate(sql), rows)


#: Every connection talks UTF-8: a database created with ``SQL_ASCII`` (``initdb``
#: without a locale) otherwise makes psycopg answer every text as bytes (its client
#: encoding follows the server's), and the daemon failed at start saying
#: ``synchronous_commit = b'on' after being set to on`` (found by the compose test's
#: PostgreSQL). PostgreSQL stores the bytes it is given in such a database as they are.
_CLIENT_ENCODING = "utf8"


class PostgresEngine(Engine):
    dialect = "postgresql"
    shared = True
    types = {"real": "DOUBLE PRECISION", "bigint": "BIGINT", "text": "TEXT", "clustered": ""}

    def __init__(self, url: str, *, synchronous: str | None = None,
                 pool_max: int = _POOL_MAX, application_name: str | None = None) -> None:
        """``synchronous``: every connection's ``synchronous_commit`` (None: ``on``);
        ``application_name``: the connections' (unless the URL sets one)."""
        self.url = url
        self._names: dict[str, Any] = (
            {"application_name": application_name}
            if application_name and "application_name" not in url else {})
        self.synchronous = (synchronous or DEFAULT_SYNCHRONOUS).strip().lower()
        if self.synchronous not in LEVELS:
            raise ValueError("PostgreSQL's synchronous must be one of "
                             f"{', '.join(LEVELS)}, not {synchronous!r}")
        self.pool_max = pool_max
        self._pool: ConnectionPool | None = None
        self._executor: ThreadPoolExecutor | None = None

    def _configure(self, conn: psycopg.Connection) -> None:
        """Each new connection of the pool, before its first use: its level for the
        session, and the server's TCP keepalives (committed, or the pool's rollback
        would undo them)."""
        conn.execute(_SET_LEVEL, (self.synchronous,))
        for statement in KEEPALIVES:
            conn.execute(statement)
        conn.commit()

    async def start(self) -> None:
        pool = ConnectionPool(self.url, min_size=1, max_size=self.pool_max, open=False,
                              kwargs={"autocommit": False,
                                      "client_encoding": _CLIENT_ENCODING, **self._names},
                              configure=self._configure)
        await asyncio.to_thread(pool.open, True, 10.0)
        try:
            level = await asyncio.to_thread(self._read_back, pool)
        except BaseException:
            await asyncio.to_thread(pool.close)
            raise
        if level != self.synchronous:
            await asyncio.to_thread(pool.close)
            raise RuntimeError(f"PostgreSQL runs at synchronous_commit = {level} after "
                               f"being set to {self.synchronous}")
        self._pool = pool
        self._executor = ThreadPoolExecutor(self.pool_max, thread_name_prefix="agentd-pg")

    @staticmethod
    def _read_back(pool: ConnectionPool) -> str:
        with pool.connection() as conn:
            row = conn.execute("SHOW synchronous_commit").fetchone()
        return str(row[0]) if row else ""

    async def close(self) -> None:
        if self._executor is not None:
            # Off the loop: a query still under way may wait on something the loop
            # runs (found in CI: a test's network proxy on the same loop, and the
            # join deadlocked); the loop keeps turning while the workers finish.
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown, True)
        if self._pool is not None:
            await asyncio.to_thread(self._pool.close)
            self._pool = None

    def _run(self, fn: Callable[[Tx], T], read_only: bool) -> T:
        pool = self._pool
        assert pool is not None
        try:
            with pool.connection() as conn:
                conn.read_only = read_only
                with conn.transaction(), conn.cursor() as cur:
                    return fn(_PgTx(cur, _NOTIFY))
        except psycopg.OperationalError as exc:
            if exc.sqlstate is None or exc.sqlstate[:2] in ("08", "57"):
                # The connection was lost (the server restarted, or ended it): the
                # pool's other idle ones are likely gone too. Each would fail one
                # more transaction; they are tested (and replaced) now instead.
                with contextlib.suppress(Exception):
                    pool.check()
            raise

    def _submit(self, fn: Callable[[Tx], T], read_only: bool) -> asyncio.Future[T]:
        if self._executor is None:
            raise RuntimeError("store is not open")
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._executor, self._run, fn, read_only)

    def _write(self, fn: Callable[[Tx], T]) -> T:
        began = time.perf_counter()
        value = self._run(fn, False)
        self._told(time.perf_counter() - began, 1)
        return value

    def write(self, fn: Callable[[Tx], T]) -> asyncio.Future[T]:
        if self.on_commit is None:
            return self._submit(fn, False)
        if self._executor is None:
            raise RuntimeError("store is not open")
        return asyncio.get_running_loop().run_in_executor(self._executor, self._write, fn)

    async def read(self, fn: Callable[[Tx], T]) -> T:
        return await self._submit(fn, True)

    def is_unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.errors.UniqueViolation)

    def is_outage(self, exc: BaseException) -> bool:
        # (a lost or refused connection, the server shutting down or ending this
        # backend, the pool out of connections, a deadlock or serialization failure)
        return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))

    def announce_agent(self, tx: Tx, note: str) -> None:
        tx.execute("SELECT pg_notify(?, current_schema() || chr(10) || ?)",
                   (AGENTS_CHANNEL, note))

    def announce_cancel(self, tx: Tx, run_id: str) -> None:
        tx.execute("SELECT pg_notify(?, current_schema() || chr(10) || ?)",
                   (CANCELS_CHANNEL, run_id))

    async def listen(self, on_commit: Callable[[str, int], None],
                     on_agent: Callable[[str], None] | None = None,
                     on_cancel: Callable[[str], None] | None = None) -> None:
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, client_encoding=_CLIENT_ENCODING,
                    **self._names)
                async with conn:
                    # (it commits nothing, but runs at the same level as the others)
                    await conn.execute(_SET_LEVEL, (self.synchronous,))
                    await conn.execute(f"LISTEN {CHANNEL}")
                    schema = None
                    if on_agent is not None or on_cancel is not None:
                        cur = await conn.execute("SELECT current_schema()")
                        schema = str((await cur.fetchone() or ("",))[0])
                    if on_agent is not None:
                        await conn.execute(f"LISTEN {AGENTS_CHANNEL}")
                    if on_cancel is not None:
                        await conn.execute(f"LISTEN {CANCELS_CHANNEL}")
                    async for note in conn.notifies():
                        if note.channel in (AGENTS_CHANNEL, CANCELS_CHANNEL):
                            where, _, what = note.payload.partition("\n")
                            if where != schema:
                                continue
                            if note.channel == AGENTS_CHANNEL and on_agent is not None:
                                on_agent(what)
                            elif note.channel == CANCELS_CHANNEL and on_cancel is not None:
                                on_cancel(what)
                            continue
                        session_id, _, seq = note.payload.rpartition(":")
                        with contextlib.suppress(ValueError):
                            on_commit(session_id, int(seq))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listening for other nodes' commits failed (%s); retrying",
                            exc)
                await asyncio.sleep(1.0)

    def node_lock(self, node_id: str) -> NodeLock:
        return NodeLock(self.url, node_id, client_encoding=_CLIENT_ENCODING)

    def run_script(self, tx: Tx, sql: str) -> None:
        for statement in sql.split(";"):
            if statement.strip():
                tx.execute(statement)
