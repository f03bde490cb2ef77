"""The store: agents, sessions, runs and the per-session event log.

``open_store(url, options)`` picks the engine by URL scheme: ``sqlite:///path`` and
``postgresql://...``; :class:`StoreOptions` carries the daemon's settings for them
(``Settings.store_options()``).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

from agentd.clock import SYSTEM, Clock
from agentd.errors import InvalidInput
from agentd.store._fork_store import ForkRecord
from agentd.store._identity import TenantRow, TokenRow
from agentd.store._library import tune_sqlite
from agentd.store._snapshot_store import WorkspaceHead
from agentd.store.agents_query import AgentPage
from agentd.store.audit import AuditEntry, AuditRow
from agentd.store.engine import Engine, Tx
from agentd.store.quota import Quota
from agentd.store.records import (
    USAGE_GROUPS,
    AgentRecord,
    EventRecord,
    NewEvent,
    RunRecord,
    SessionRecord,
    UsageCharge,
)
from agentd.store.runs_query import RunPage
from agentd.store.sessions_query import SessionPage
from agentd.store.store import (
    Accepted,
    Lease,
    LeaseLost,
    RunMoved,
    RunUpdate,
    Steered,
    Store,
    new_id,
)

__all__ = [
    "USAGE_GROUPS",
    "Accepted",
    "AgentPage",
    "AgentRecord",
    "AuditEntry",
    "AuditRow",
    "Engine",
    "EventRecord",
    "ForkRecord",
    "Lease",
    "LeaseLost",
    "NewEvent",
    "Quota",
    "RunMoved",
    "RunPage",
    "RunRecord",
    "RunUpdate",
    "SessionPage",
    "SessionRecord",
    "Steered",
    "Store",
    "StoreOptions",
    "TenantRow",
    "TokenRow",
    "Tx",
    "UsageCharge",
    "WorkspaceHead",
    "engine_for_url",
    "new_id",
    "open_store",
    "tune_sqlite",
]


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """How the engine runs: the daemon's ``[store] synchronous`` (the dialect's own
    level: SQLite's ``PRAGMA synchronous``, PostgreSQL's ``synchronous_commit``; None:
    the engine's default) and ``sqlite_*`` settings (see :mod:`agentd.store._sqlite`),
    checked by the engine."""

    synchronous: str | None = None
    sqlite_writer: str | None = None
    sqlite_cache_mb: int = 64
    #: PostgreSQL: the ``application_name`` of the engine's connections (which node
    #: they are, in ``pg_stat_activity``), unless the URL sets one.
    application_name: str | None = None


def engine_for_url(url: str, options: StoreOptions = StoreOptions()) -> Engine:
    """Build the engine a database URL names, without connecting."""
    scheme = urlparse(url).scheme.lower()
    if scheme == "sqlite":
        # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute.db.
        rest = url[len("sqlite://"):]
        path = rest[1:] if rest.startswith("/") else rest
        if not path or path == ":memory:" or "mode=memory" in path:
            # Readers use their own connections, which would each see an empty database.
            raise InvalidInput("in-memory SQLite is not supported: use a file path "
                               "(sqlite:///relative.db or sqlite:////absolute.db)")
        from agentd.store._sqlite import SqliteEngine

        return SqliteEngine(path, synchronous=options.synchronous,
                            writer=options.sqlite_writer, cache_mb=options.sqlite_cache_mb)
    if scheme in {"postgresql", "postgres", "postgresql+psycopg"}:
        from agentd.store._postgres import PostgresEngine

        return PostgresEngine(url.replace("postgresql+psycopg://", "postgresql://", 1),
                              synchronous=options.synchronous,
                              application_name=options.application_name)
    raise InvalidInput(
        f"unsupported database URL scheme {scheme!r}: use sqlite:///PATH or postgresql://..."
    )


async def open_store(url: str, options: StoreOptions = StoreOptions(), *,
                     clock: Clock = SYSTEM) -> Store:
    """Open (and migrate) the store at ``url``; ``clock`` is what "now" is in what it
    writes (:mod:`agentd.clock`)."""
    store = Store(engine_for_url(url, options), clock)
    await store.open()
    return store
