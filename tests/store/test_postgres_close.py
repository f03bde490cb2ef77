"""Closing a PostgreSQL store while a query is under way does not stop the event loop.

The store's queries run on worker threads; closing waits for them. It used to wait by
joining the threads on the loop itself, so a query waiting on anything the loop runs
never finished, and neither did the close (found in CI: a test's network proxy ran on
the same loop, and a node's close hung until the test timed out). Here the database
is reached through a proxy on the test's loop that forwards nothing while held: a
query is left waiting behind it, the store is closed, and only then is the proxy let
go, from the loop.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import pytest
from tests.runtime.test_nodes_outage import HeldProxy, _through

from agentd.store._postgres import PostgresEngine

pytestmark = pytest.mark.postgres


async def test_closing_waits_for_a_query_without_stopping_the_loop(pg_url: str) -> None:
    parts = urlsplit(pg_url)
    proxy = await HeldProxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    engine = PostgresEngine(_through(pg_url, proxy.port))
    try:
        await engine.start()
        proxy.flowing.clear()
        query = asyncio.ensure_future(engine.read(lambda tx: tx.one("SELECT 42")))
        await asyncio.sleep(0)
        closing = asyncio.ensure_future(engine.close())
        # The loop still turns while the close waits for the query...
        for _ in range(20):
            await asyncio.sleep(0)
        assert not closing.done() and not query.done()
        proxy.flowing.set()  # ...so the proxy, run by the loop, can let it through.
        assert await asyncio.wait_for(query, 60) == (42,)
        await asyncio.wait_for(closing, 60)
    finally:
        proxy.flowing.set()
        await engine.close()
        await proxy.close()
