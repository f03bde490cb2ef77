"""The store: agents, sessions, runs and the per-session event log.

``open_store(url)`` picks the engine by URL scheme: ``sqlite:///path`` (or
``sqlite:///:memory:``) and ``postgresql://...``.
"""

from __future__ import annotations

from urllib.parse import urlparse

from agentd.errors import InvalidInput
from agentd.store._engine import Engine, Tx
from agentd.store._runs_query import RunPage
from agentd.store.records import (
    USAGE_GROUPS,
    AgentRecord,
    EventRecord,
    NewEvent,
    RunRecord,
    SessionRecord,
    UsageCharge,
)
from agentd.store.store import Accepted, Lease, LeaseLost, RunUpdate, Steered, Store, new_id

__all__ = [
    "USAGE_GROUPS",
    "Accepted",
    "AgentRecord",
    "Engine",
    "EventRecord",
    "Lease",
    "LeaseLost",
    "NewEvent",
    "RunPage",
    "RunRecord",
    "RunUpdate",
    "SessionRecord",
    "Steered",
    "Store",
    "Tx",
    "UsageCharge",
    "engine_for_url",
    "new_id",
    "open_store",
]


def engine_for_url(url: str) -> Engine:
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

        return SqliteEngine(path)
    if scheme in {"postgresql", "postgres", "postgresql+psycopg"}:
        from agentd.store._postgres import PostgresEngine

        return PostgresEngine(url.replace("postgresql+psycopg://", "postgresql://", 1))
    raise InvalidInput(
        f"unsupported database URL scheme {scheme!r}: use sqlite:///PATH or postgresql://..."
    )


async def open_store(url: str) -> Store:
    """Open (and migrate) the store at ``url``."""
    store = Store(engine_for_url(url))
    await store.open()
    return store
