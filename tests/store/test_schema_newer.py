"""A database a newer agentd migrated is refused, saying which schema version it needs,
and left as it is (issue 33, "Bad input"); on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from agentd.errors import StoreError
from agentd.store import open_store
from agentd.store._schema import MIGRATIONS


async def test_a_database_with_a_newer_schema_is_refused_and_left_alone(store_url: str
                                                                       ) -> None:
    store = await open_store(store_url)
    newer = MIGRATIONS[-1][0] + 7
    await store.engine.write(lambda tx: tx.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, 0)",
        (newer, "a table from the future")))
    before = await store.engine.read(lambda tx: tx.all(
        "SELECT version FROM schema_migrations ORDER BY version"))
    await store.close()
    with pytest.raises(StoreError) as refused:
        await open_store(store_url)
    error = refused.value
    assert error.code == "schema_too_new"
    assert f"schema is at version {newer} (a table from the future)" in error.message
    assert f"knows (up to version {MIGRATIONS[-1][0]})" in error.message
    assert f"needs an agentd that knows schema version {newer}" in error.message
    assert error.details == {"schema_version": newer, "known_version": MIGRATIONS[-1][0]}
    # Nothing changed; the engine it opened is closed again (a retry is clean).
    with pytest.raises(StoreError):
        await open_store(store_url)
    from agentd.store import engine_for_url

    engine = engine_for_url(store_url)
    await engine.start()
    try:
        after = await engine.read(lambda tx: tx.all(
            "SELECT version FROM schema_migrations ORDER BY version"))
    finally:
        await engine.close()
    assert after == before
