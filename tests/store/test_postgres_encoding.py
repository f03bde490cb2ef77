"""A PostgreSQL database created without a locale (``SQL_ASCII``, what ``initdb`` makes
in a minimal container) works like any other: every connection talks UTF-8, so psycopg
answers text as text, not bytes (the daemon used to fail at start: found by the
compose test's PostgreSQL)."""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from agentd.store import open_store

pytestmark = pytest.mark.postgres

PG_URL = os.environ.get("AGENTD_TEST_POSTGRES_URL", "")


async def test_a_sql_ascii_database_stores_and_reads_text() -> None:
    if not PG_URL:
        pytest.skip("AGENTD_TEST_POSTGRES_URL is not set")
    name = f"ascii_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' TEMPLATE template0 "
                     "LC_COLLATE 'C' LC_CTYPE 'C'")
    try:
        parts = urlsplit(PG_URL)
        url = urlunsplit(parts._replace(path=f"/{name}"))
        store = await open_store(url)
        try:
            agent = await store.create_agent(name="café", model="scripted",
                                             instructions="réponds en français ✓",
                                             tools=[], settings={"note": "naïve ✓"})
            again = await store.get_agent("café")
            assert (again.name, again.instructions) == ("café", "réponds en français ✓")
            assert again.settings["note"] == "naïve ✓"
            assert again.id == agent.id
        finally:
            await store.close()
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
