"""One daemon per node id on a shared database, and which nodes are alive.

Several daemons share a PostgreSQL database, each under its ``node_id``: the name its
run leases carry. Two daemons under one name would each take the other's runs for its
own (every lease check passes for both), so a node holds its name for as long as it
runs: a session-level advisory lock keyed by the name (and the schema, so daemons on
other schemas of the database do not meet), on a connection of its own
(:class:`NodeClaim`). A second daemon started under a name in use is refused
(:class:`NodeIdInUse`, saying who holds it); the lock goes with its holder's
connection, so a crashed node's name is free at once, and a node that was only cut off
takes its name back when it reconnects (its old connection, if the server still holds
it, is ended first).

The locks are also a liveness signal other parts may use (:func:`live_nodes`): a node
whose lock is not held has no process on the database (killed, or cut off long enough
for the server to drop its connection), whatever its leases say.

SQLite has one daemon per database (the home's lock): nothing is held there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from agentd.clock import Clock
from agentd.errors import StoreError
from agentd.store.engine import Engine, Tx

__all__ = ["NodeClaim", "NodeIdInUse", "live_nodes"]

log = logging.getLogger(__name__)

#: The advisory lock's key for a node id (64 bits: ``hashtextextended``); the schema
#: is part of it. Computed by the server, so every node and every query agree.
_KEY = "hashtextextended('agentd node' || chr(10) || current_schema() || chr(10) || %s, 0)"
#: Who holds a key: the lock's backend, with what the server knows of its client.
_HOLDER = (
    "SELECT a.pid, a.application_name, host(a.client_addr), a.backend_start "
    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    f"AND ((l.classid::bigint << 32) | l.objid::bigint) = {_KEY}")


#: How long a (re)connection may take before it counts as failed (a cut-off network
#: would otherwise hold it for minutes).
_CONNECT_TIMEOUT_S = 10
#: The claim's connection is probed both ways, so that a node whose host died (no
#: FIN, no RST) frees its id within about 15 s rather than the system's two hours of
#: TCP keepalive: the server drops it (its settings for this session), and the node
#: notices a dead server (libpq's). Ignored on a Unix socket.
_SERVER_KEEPALIVE = (("tcp_keepalives_idle", 5), ("tcp_keepalives_interval", 2),
                     ("tcp_keepalives_count", 3), ("tcp_user_timeout", 10_000))
_CLIENT_KEEPALIVE: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 5,
                                     "keepalives_interval": 2, "keepalives_count": 3}


class NodeIdInUse(StoreError):
    """Another daemon runs under this node id on the same database (and schema)."""

    code = "node_id_in_use"


class NodeClaim:
    """This daemon's hold on its node id (see the module docstring).

    Args:
        url: the PostgreSQL database's URL (the one the store uses).
        node_id: the name this daemon's leases carry.
    """

    def __init__(self, url: str, node_id: str) -> None:
        self.url = url
        self.node_id = node_id
        self._conn: Any = None
        #: The server's pid of the connection that holds the lock (to end it if the
        #: server still holds it after this daemon lost it).
        self._pid: int | None = None

    @classmethod
    def of(cls, engine: Engine, node_id: str) -> NodeClaim | None:
        """The claim of a daemon on ``engine``'s database (None: not a shared one)."""
        url = getattr(engine, "url", None)
        if engine.dialect != "postgresql" or not isinstance(url, str):
            return None
        return cls(url, node_id)

    @property
    def held(self) -> bool:
        return self._conn is not None and not self._conn.closed

    async def acquire(self) -> None:
        """Take the node id; :class:`NodeIdInUse` if another daemon holds it."""
        import psycopg

        conn = await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, application_name=_application(self.node_id),
            connect_timeout=_CONNECT_TIMEOUT_S, **_CLIENT_KEEPALIVE)
        try:
            for setting, value in _SERVER_KEEPALIVE:
                with contextlib.suppress(psycopg.Error):  # (tcp_user_timeout: PG 12+)
                    await conn.execute(f"SET {setting} = {int(value)}")
            taken = await self._try(conn)
            if not taken:
                holder = await self._holder(conn)
                if holder is not None and holder[0] == self._pid:
                    # This daemon's own connection, which it lost but the server kept
                    # (a network cut it has not noticed yet): end it and take it again.
                    log.warning("node id %r: ending this node's old connection (server "
                                "pid %s), which still holds it", self.node_id, holder[0])
                    await conn.execute("SELECT pg_terminate_backend(%s)", (holder[0],))
                    taken = await self._wait_free(conn)
                    holder = None if taken else await self._holder(conn)
                if not taken:
                    raise NodeIdInUse(_in_use(self.node_id, holder))
        except BaseException:
            await conn.close()
            raise
        old, self._conn, self._pid = self._conn, conn, conn.info.backend_pid
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()

    async def keep(self) -> bool:
        """Check that the node id is still held (a round trip on its connection); if
        the connection was lost, take the node id again. False (logged) if another
        daemon holds it now: this one must stop acting on its runs, whose leases now
        name that one too. A database out of reach raises (try again later)."""
        if self.held:
            try:
                await asyncio.wait_for(self._conn.execute("SELECT 1"), _CONNECT_TIMEOUT_S)
                return True
            except Exception as exc:
                log.warning("node id %r: its connection to the database was lost (%s); "
                            "taking it again", self.node_id, exc or type(exc).__name__)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._conn.close(), 1.0)
        try:
            await self.acquire()
        except NodeIdInUse as exc:
            log.error("%s", exc.message)
            return False
        log.info("node id %r held again", self.node_id)
        return True

    async def hold(self, clock: Clock, period_s: float,
                   on_taken: Callable[[], Awaitable[None]]) -> None:
        """Until cancelled: :meth:`keep` the node id every ``period_s``; if another
        daemon took it meanwhile, call ``on_taken`` (which must stop this daemon
        acting under it) and return."""
        while True:
            await clock.sleep(period_s)
            try:
                held = await asyncio.wait_for(self.keep(), 3 * _CONNECT_TIMEOUT_S)
            except Exception as exc:
                log.warning("could not check node id %r on the database (%s); trying "
                            "again in %g s", self.node_id, exc or type(exc).__name__,
                            period_s)
                continue
            if not held:
                log.error("node id %r is held by another daemon now: stopping every "
                          "run here without writing, and shutting down", self.node_id)
                await on_taken()
                return

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _try(self, conn: Any) -> bool:
        cur = await conn.execute(f"SELECT pg_try_advisory_lock({_KEY})", (self.node_id,))
        row = await cur.fetchone()
        return bool(row and row[0])

    async def _holder(self, conn: Any) -> tuple[Any, ...] | None:
        cur = await conn.execute(_HOLDER, (self.node_id,))
        row: tuple[Any, ...] | None = await cur.fetchone()
        return row

    async def _wait_free(self, conn: Any, tries: int = 50) -> bool:
        """Whether the lock was let go (its backend ended) within ``tries`` looks, and
        taken."""
        for _ in range(tries):
            if await self._try(conn):
                return True
            await asyncio.sleep(0.1)
        return False


def _application(node_id: str) -> str:
    """The connection's ``application_name`` (63 bytes at most): who it is, for
    ``pg_stat_activity`` and the refusal of a second daemon."""
    return f"agentd node {node_id}".encode()[:63].decode(errors="ignore")


def _in_use(node_id: str, holder: tuple[Any, ...] | None) -> str:
    who = ""
    if holder is not None:
        pid, app, addr, since = holder
        who = (f" (server pid {pid}, {app or 'no application name'}, from "
               f"{addr or 'a local socket'}, connected since {since:%Y-%m-%d %H:%M:%S %Z})"
               if since is not None else f" (server pid {pid})")
    return (f"node id {node_id!r} is in use by another agentd daemon on this database"
            f"{who}: two daemons under one node id would take each other's runs; give "
            "this one its own node_id (AGENTD_NODE_ID), or stop the other first (if it "
            "was this node's own daemon, on a host that went down, the database lets "
            "its id go within about 15 s)")


async def live_nodes(engine: Engine, node_ids: Sequence[str]) -> set[str]:
    """Which of ``node_ids`` hold their node id on the database now (PostgreSQL; a
    node that does not is dead or cut off). Every node on SQLite is this one."""
    if engine.dialect != "postgresql":
        return set(node_ids)
    names = sorted(set(node_ids))

    def op(tx: Tx) -> set[str]:
        found = set()
        for name in names:
            if tx.one(_HOLDER.replace("%s", "?"), (name,)) is not None:
                found.add(name)
        return found

    return await engine.read(op)
