"""The store's side of MCP servers' OAuth (migration 25): logins under way taken once,
even by two callbacks at once; token locks that one holder has at a time, taken over
when they expire, given back with the token they guarded; an agent's rows gone with
it; the migration keeps the secrets of a database from before it. SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from agentd.store import open_store
from agentd.store import store as store_module
from agentd.store._schema import MIGRATIONS
from agentd.store.oauth import FlowRow, OAuthStore
from agentd.store.secrets import SecretStore
from agentd.store.store import Store


def _flow(state_hash: str, *, agent: str = "a", server: str = "gh", at: float = 100.0,
          ttl: float = 600.0) -> FlowRow:
    return FlowRow(state_hash=state_hash, tenant="default", agent=agent, server=server,
                   principal='{"name": "ops"}', data="sealed", key_id="k", created_at=at,
                   expires_at=at + ttl)


async def test_a_flow_is_taken_once_even_by_two_callbacks_at_once(store: Store) -> None:
    flows = OAuthStore(store.engine)
    await flows.add_flow(_flow("h1"))
    taken = await asyncio.gather(*(flows.take_flow("h1") for _ in range(4)))
    assert sum(t is not None for t in taken) == 1
    assert await flows.take_flow("h1") is None
    assert await flows.take_flow("never") is None


async def test_old_and_expired_flows_are_dropped_as_new_ones_come(store: Store) -> None:
    flows = OAuthStore(store.engine)
    await flows.add_flow(_flow("expired", at=0.0, ttl=10.0))
    for i in range(25):
        await flows.add_flow(_flow(f"h{i:02}", at=100.0 + i), keep=20)
    pending = await flows.pending(tenant="default", agent="a", now=120.0)
    assert [f.state_hash for f in pending] == [f"h{i:02}" for i in range(24, 4, -1)]
    assert await flows.take_flow("expired") is None
    assert await flows.drop_flows(tenant="default", agent="a", server="gh") == 20


async def test_a_lock_has_one_holder_until_it_expires_or_is_given_back(store: Store) -> None:
    flows = OAuthStore(store.engine)
    key = {"tenant": "default", "agent": "a", "name": "_mcp_oauth.x"}
    got = await asyncio.gather(*(flows.lock(**key, holder=f"n{i}", now=100.0, ttl_s=30)
                                 for i in range(5)))
    assert got.count(True) == 1
    holder = f"n{got.index(True)}"
    assert await flows.lock(**key, holder=holder, now=101.0, ttl_s=30)  # its own again
    assert not await flows.lock(**key, holder="other", now=129.0, ttl_s=30)
    assert await flows.lock(**key, holder="other", now=131.0, ttl_s=30)  # expired: taken
    await flows.unlock(**key, holder=holder)  # (no longer its: nothing happens)
    assert not await flows.lock(**key, holder="third", now=132.0, ttl_s=30)
    row = await flows.refreshed(**key, value="sealed-2", key_id="k", now=133.0,
                                holder="other")
    assert row.value == "sealed-2"
    assert await flows.lock(**key, holder="third", now=134.0, ttl_s=30)  # given back


async def test_an_agents_flows_locks_and_tokens_go_with_it(store: Store) -> None:
    flows = OAuthStore(store.engine)
    await store.create_agent(name="a", model="scripted", instructions="", tools=[],
                             settings={})
    await flows.add_flow(_flow("h1"))
    await flows.lock(tenant="default", agent="a", name="_mcp_oauth.x", holder="n",
                     now=100.0, ttl_s=30)
    await flows.refreshed(tenant="default", agent="a", name="_mcp_oauth.x", value="v",
                          key_id="k", now=100.0)
    await store.delete_agent("a")
    assert await flows.take_flow("h1") is None
    assert await SecretStore(store.engine).get(tenant="default", agent="a",
                                               name="_mcp_oauth.x") is None
    assert await flows.lock(tenant="default", agent="a", name="_mcp_oauth.x",
                            holder="m", now=101.0, ttl_s=30)


@pytest.mark.empty_schema
async def test_migration_26_keeps_the_secrets_of_before(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "MIGRATIONS", [m for m in MIGRATIONS if m[0] < 25])
    old = await open_store(store_url)
    try:
        assert await old.schema_version() < 25
        await SecretStore(old.engine).put(tenant="default", agent="", name="GH",
                                          value="sealed", key_id="k", now=1.0)
    finally:
        await old.close()
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS)
    new = await open_store(store_url)
    try:
        assert await new.schema_version() >= 25
        kept = await SecretStore(new.engine).get(tenant="default", agent="", name="GH")
        assert kept is not None and kept.value == "sealed"
        flows = OAuthStore(new.engine)
        await flows.add_flow(_flow("h1"))
        assert (await flows.take_flow("h1")) is not None
    finally:
        await new.close()


async def test_two_nodes_locking_one_token_at_once_get_one_lock(store_url: str) -> None:
    """Two stores (two nodes' connections) racing for one lock: one has it."""
    nodes = [await open_store(store_url) for _ in range(2)]
    try:
        key = {"tenant": "default", "agent": "", "name": "_mcp_oauth.y"}
        for attempt in range(10):
            name = {**key, "name": f"_mcp_oauth.y{attempt}"}
            got = await asyncio.gather(*(OAuthStore(n.engine).lock(
                **name, holder=f"node{i}", now=100.0, ttl_s=30)
                for i, n in enumerate(nodes)))
            assert got.count(True) == 1, (attempt, got)
    finally:
        for node in nodes:
            await node.close()
