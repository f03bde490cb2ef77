"""What a database engine must provide: run a function inside a transaction, off the loop.

Store operations are plain synchronous functions of a :class:`Tx`. An engine runs
them in a worker thread (sqlite3 and psycopg's sync API block) and owns the
dialect's small differences: placeholder style, column types, the unique-violation
error. Everything else is shared SQL in ``store.py``.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from agentd.store.node_lock import NodeLock

__all__ = ["Engine", "Tx"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Row = tuple[Any, ...]


class Tx:
    """A cursor inside an open transaction, with ``?`` placeholders in any dialect.

    Statements go to the cursor as they are written (SQLite's placeholders); a
    dialect that writes them otherwise translates them in a subclass of its own
    (PostgreSQL's ``_PgTx``)."""

    __slots__ = ("_cur", "append_returning")

    def __init__(self, cursor: Any, append_returning: str = "") -> None:
        self._cur = cursor
        #: Extra ``RETURNING`` items of the statement that appends to a session's log
        #: (PostgreSQL: a NOTIFY, so other nodes learn of the commit).
        self.append_returning = append_returning

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cur.execute(sql, params)

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self._cur.execute(sql, params)
        return list(self._cur.fetchall())

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        self._cur.execute(sql, params)
        row: Row | None = self._cur.fetchone()
        return row

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._cur.executemany(sql, rows)

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)


class Engine(abc.ABC):
    """A database behind a URL. ``dialect`` is ``sqlite`` or ``postgresql``."""

    dialect: str
    #: Column types that differ between dialects, used by the migrations.
    types: dict[str, str]
    #: How durable a commit is before it is acknowledged, in the dialect's words
    #: (SQLite's ``PRAGMA synchronous``, PostgreSQL's ``synchronous_commit``): set on
    #: every connection the engine opens, and read back from one by :meth:`start`.
    synchronous: str

    @abc.abstractmethod
    async def start(self) -> None:
        """Open connections. Called once before any other call."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish pending writes and close connections."""

    @abc.abstractmethod
    def write(self, fn: Callable[[Tx], T]) -> asyncio.Future[T]:
        """Run ``fn`` in a write transaction; the future resolves once it is committed.

        If ``fn`` raises, none of its changes are kept and the future holds the error.
        A plain future rather than a coroutine: cancelling the waiter does not stop the
        write, and a caller can wait on it without letting a cancel through until it
        lands (see ``_Landing`` in agentd.runtime.loop, RunExecutor._commit's wait).
        """

    @abc.abstractmethod
    async def read(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` against a consistent snapshot; it must not write."""

    @abc.abstractmethod
    def is_unique_violation(self, exc: BaseException) -> bool:
        """Whether ``exc`` is this driver's unique-constraint error."""

    def is_outage(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the database could not be reached, dropped the
        connection or rolled the transaction back (not that anything asked of it was
        wrong): what was being written may or may not be committed, and asking again
        later may succeed. A run's executor stops on one and the run resumes from its
        log. SQLite's errors are never that (its file is this process's own)."""
        return False

    @abc.abstractmethod
    def run_script(self, tx: Tx, sql: str) -> None:
        """Execute a multi-statement DDL script inside ``tx``."""

    #: Whether other processes may share the database (and so must hear of commits).
    shared: bool = False
    #: Told of each write transaction committed: ``(seconds it took, writes in it)``
    #: (SQLite: one group commit of a batch; PostgreSQL: one write). Called on the
    #: loop or on the writer's thread; it must be quick and must not raise. None: off.
    on_commit: Callable[[float, int], None] | None = None

    def _told(self, seconds: float, writes: int) -> None:
        """Tell :attr:`on_commit` of a commit (what it raises is logged, not raised:
        the commit is made)."""
        hook = self.on_commit
        if hook is not None:
            try:
                hook(seconds, writes)
            except Exception:
                log.exception("the store's commit hook failed")

    def announce_agent(self, tx: Tx, note: str) -> None:
        """Announce a change to an agent (``note``) to every process sharing the
        database, when ``tx`` commits (only called when :attr:`shared`)."""
        return None

    def announce_cancel(self, tx: Tx, run_id: str) -> None:
        """Announce a cancel asked of whichever process drives ``run_id``, when ``tx``
        commits (only called when :attr:`shared`)."""
        return None

    async def listen(self, on_commit: Callable[[str, int], None],
                     on_agent: Callable[[str], None] | None = None,
                     on_cancel: Callable[[str], None] | None = None) -> None:
        """Call ``on_commit(session_id, last_seq)`` for every commit to any session's log,
        ``on_agent(note)`` for every change to an agent announced
        (:meth:`announce_agent`) and ``on_cancel(run_id)`` for every cancel announced
        (:meth:`announce_cancel`) by any process sharing the database, this one
        included, until cancelled (what is announced while its connection is down is
        not heard). Engines that cannot be shared (SQLite: one daemon per home) have nothing to
        hear and return at once."""
        return None

    def node_lock(self, node_id: str) -> NodeLock | None:
        """A liveness lock for the node ``node_id`` (:mod:`agentd.store.node_lock`),
        not taken yet; None for engines that cannot be shared (SQLite: one daemon)."""
        return None
