"""This node's liveness lock on PostgreSQL: held for as long as the process lives.

A session-level advisory lock, taken on a connection of its own (not one of the
pool's: a pool hands connections round and may close them). Its key is a hash of the
schema and the node id (``hashtextextended``: 64 bits, computed by the server), so
that daemons sharing a database under different schemas never meet, and the node is
registered in ``node_liveness`` with that key. When the process dies, however it
dies, its connection closes and the server drops the lock at once: another node that
finds a registered node's lock free knows it is gone (``Store.dead_nodes``). A host
that vanishes without closing its connections is noticed by the server's TCP
keepalives, set on this connection to give up after about 11 s (``SET
tcp_keepalives_*``: no effect over a Unix socket, where a dead process is always seen
at once).

A node that finds its own lock held at start waits for it (its own previous process,
whose connection the server has not dropped yet), then refuses to start: another
live node uses the same node id. A node that loses its lock while it runs (the
connection broke) keeps trying to take it back; meanwhile other nodes may take its
runs over, and every commit it makes to them is refused by their leases' fencing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import psycopg

from agentd.errors import StoreError

__all__ = ["KEEPALIVES", "NodeLock"]

log = logging.getLogger(__name__)

#: The key of a node's lock: schema and node id, hashed by the server.
_KEY = "SELECT hashtextextended(coalesce(current_schema(), '') || chr(10) || %s, 0)"
#: The server gives up on a connection whose host stopped answering after about 11 s
#: (5 s idle, then 3 probes 2 s apart) instead of the system's default (hours): a node
#: that vanished in the middle of a transaction (a power cut, a partition) would hold
#: its row locks, the session's log and its run's lease row with them, that long,
#: and no other node could take its runs over. (A process that is only stopped still
#: answers: its kernel does. Over a Unix socket these do nothing.)
KEEPALIVES = ("SET tcp_keepalives_idle = 5", "SET tcp_keepalives_interval = 2",
              "SET tcp_keepalives_count = 3")
#: How this side notices a dead server (seconds idle, between probes, probes): as the
#: server notices a vanished client (``KEEPALIVES``, the pool's too).
_KEEPALIVE = (5, 2, 3)
#: Between two tries to take (or take back) the lock.
RETRY_S = 0.25


class NodeLock:
    """Args:
        url: the database (the pool's URL: the same schema).
        node_id: this node's name in run leases.
        client_encoding: as the pool's connections.
    """

    def __init__(self, url: str, node_id: str, *, client_encoding: str = "utf8") -> None:
        self.url = url
        self.node_id = node_id
        self.client_encoding = client_encoding
        self.key: int | None = None
        self._conn: psycopg.AsyncConnection | None = None
        #: Times the lock was lost while the node ran (the connection broke).
        self.losses = 0

    @property
    def held(self) -> bool:
        return self._conn is not None and not self._conn.closed

    async def _connect(self) -> psycopg.AsyncConnection:
        idle, interval, count = _KEEPALIVE
        conn = await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, client_encoding=self.client_encoding,
            application_name=f"agentd node {self.node_id}"[:63], keepalives=1,
            keepalives_idle=idle, keepalives_interval=interval, keepalives_count=count,
            connect_timeout=10)
        try:
            for statement in KEEPALIVES:
                await conn.execute(statement)
            if self.key is None:
                cur = await conn.execute(_KEY, (self.node_id,))
                row = await cur.fetchone()
                self.key = int(row[0]) if row else 0
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _take(self, conn: psycopg.AsyncConnection, started_at: float) -> bool:
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
        row = await cur.fetchone()
        if not (row and row[0]):
            return False
        # Registered once the lock is held: a node seen registered with its lock free
        # is gone, never one that is only starting.
        await conn.execute(
            "INSERT INTO node_liveness (id, lock_key, started_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET lock_key = EXCLUDED.lock_key, "
            "started_at = EXCLUDED.started_at", (self.node_id, self.key, started_at))
        return True

    async def acquire(self, *, wait_s: float, now: Callable[[], float] = time.time
                      ) -> None:
        """Take the lock, waiting up to ``wait_s`` for it; raises :class:`StoreError`
        when another process holds it all that time (a second node with this id)."""
        deadline = time.monotonic() + wait_s
        conn = await self._connect()
        try:
            warned = False
            while not await self._take(conn, now()):
                if time.monotonic() >= deadline:
                    raise StoreError(
                        f"node id {self.node_id!r} is in use: another process on this "
                        f"database holds its liveness lock (waited {wait_s:.0f} s). Give "
                        "each node its own node_id (AGENTD_NODE_ID), or stop the other "
                        "one first")
                if not warned:
                    log.warning("node id %r: its liveness lock is held by another "
                                "process (this node's previous one, not yet dropped by "
                                "the server, or another node with the same id); waiting "
                                "up to %.0f s", self.node_id, wait_s)
                    warned = True
                await asyncio.sleep(RETRY_S)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        log.info("node %s: liveness lock held", self.node_id)

    async def keep(self, period_s: float, now: Callable[[], float] = time.time) -> None:
        """Until cancelled: look at the lock's connection every ``period_s``; when it
        broke, take the lock again on a new one (as soon as it can be had)."""
        while True:
            await asyncio.sleep(period_s)
            conn = self._conn
            try:
                if conn is None or conn.closed:
                    raise psycopg.OperationalError("no connection")
                await conn.execute("SELECT 1")
                continue
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                self.losses += 1
                log.warning("node %s: the liveness lock's connection broke (%s); other "
                            "nodes may take this node's runs over until it is taken "
                            "again", self.node_id, exc)
                await self._drop()
            await self._retake(now)

    async def _retake(self, now: Callable[[], float]) -> None:
        while True:
            try:
                conn = await self._connect()
            except (psycopg.Error, OSError):
                await asyncio.sleep(RETRY_S)
                continue
            try:
                if await self._take(conn, now()):
                    self._conn = conn
                    log.info("node %s: liveness lock taken again", self.node_id)
                    return
            except (psycopg.Error, OSError):
                pass
            await conn.close()
            await asyncio.sleep(RETRY_S)

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()

    async def release(self) -> None:
        """Let the lock go (a node stopping). Its row stays: a lease it could not
        hand back at shutdown is taken over at once by the first node to see it."""
        await self._drop()
