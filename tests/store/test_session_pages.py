"""An agent's sessions a page at a time (Store.session_page), on SQLite and (with
AGENTD_TEST_POSTGRES_URL) PostgreSQL: every session once, in (updated_at DESC, id DESC)
order, ties broken by id across page boundaries, keys matched with % and _ literal, and
on SQLite a plan that walks the sessions_recent index."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agentd.errors import InvalidInput
from agentd.store import SessionPage, Store, open_store
from agentd.store.rows import SESSION_NEW
from agentd.store.sessions_query import list_sessions


async def _agent(store: Store, name: str = "a1") -> str:
    agent = await store.create_agent(name=name, model="scripted", instructions="",
                                     tools=[], settings={})
    return agent.id


async def _sessions(store: Store, agent_id: str, rows: list[tuple[str, str, float]]) -> None:
    """Insert sessions (id, key, updated_at) as they are: the test picks the times."""
    await store.engine.write(lambda tx: [tx.execute(
        f"INSERT INTO sessions ({SESSION_NEW}) VALUES (?, ?, ?, 0, ?, ?, 0, ?)",
        (sid, agent_id, key, at, at, at)) for sid, key, at in rows])


async def _all_pages(store: Store, agent_id: str, limit: int, q: str | None = None
                     ) -> tuple[list[str], int]:
    keys: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        page = await store.session_page(agent_id, limit=limit, after=after, q=q)
        assert len(page.sessions) <= limit
        keys += [s.key for s in page.sessions]
        pages += 1
        if page.next_after is None:
            return keys, pages
        after = page.next_after


async def test_paging_covers_every_session_once_in_order(store: Store) -> None:
    agent_id = await _agent(store)
    other = await _agent(store, "a2")
    # 250 sessions; many share an updated_at (ten at each instant), so page boundaries
    # fall inside groups of equal times and only the id orders them.
    rows = [(f"s{i:04d}", f"user:{i}", 1000.0 + i // 10) for i in range(250)]
    await _sessions(store, agent_id, rows)
    await _sessions(store, other, [("zz-other", "user:1", 5000.0)])
    expected = [key for _, key, _ in sorted(rows, key=lambda r: (r[2], r[0]), reverse=True)]
    assert [s.key for s in await store.list_sessions(agent_id)] == expected
    for limit in (1, 7, 10, 100, 250, 1000):
        keys, pages = await _all_pages(store, agent_id, limit)
        assert keys == expected, limit
        assert pages == -(-250 // limit), limit  # an exact fit ends without an empty page


async def test_equal_times_are_ordered_by_id_across_a_boundary(store: Store) -> None:
    agent_id = await _agent(store)
    await _sessions(store, agent_id, [("s-c", "c", 7.5), ("s-a", "a", 7.5), ("s-b", "b", 7.5),
                                      ("s-d", "d", 9.25), ("s-e", "e", 1.0)])
    first = await store.session_page(agent_id, limit=2)
    assert [s.key for s in first.sessions] == ["d", "c"] and first.next_after
    second = await store.session_page(agent_id, limit=2, after=first.next_after)
    assert [s.key for s in second.sessions] == ["b", "a"]
    third = await store.session_page(agent_id, limit=2, after=second.next_after)
    assert [s.key for s in third.sessions] == ["e"] and third.next_after is None


async def test_activity_moves_a_session_to_the_top_and_leaves_the_rest(store: Store) -> None:
    agent_id = await _agent(store)
    await _sessions(store, agent_id, [(f"s{i}", f"k{i}", 100.0 + i) for i in range(6)])
    first = await store.session_page(agent_id, limit=2)
    assert [s.key for s in first.sessions] == ["k5", "k4"]
    # k1 gets a message (updated_at = now): it is not on the later pages of this pass...
    await store.accept_message(agent_id=agent_id, key="k1", content="hi")
    rest, _ = await _all_pages_after(store, agent_id, first)
    assert rest == ["k3", "k2", "k0"]
    # ...and it is on the next first page.
    assert [s.key for s in (await store.session_page(agent_id, limit=1)).sessions] == ["k1"]


async def _all_pages_after(store: Store, agent_id: str, page: SessionPage
                           ) -> tuple[list[str], int]:
    keys: list[str] = []
    pages = 0
    while page.next_after is not None:
        page = await store.session_page(agent_id, limit=2, after=page.next_after)
        keys += [s.key for s in page.sessions]
        pages += 1
    return keys, pages


async def test_q_matches_part_of_the_key_in_any_case_literally(store: Store) -> None:
    agent_id = await _agent(store)
    keys = ["User:Alice", "user:bob", "100%", "a_b", "axb", "a\\b", "telegram:42"]
    await _sessions(store, agent_id, [(f"s{i}", k, float(i)) for i, k in enumerate(keys)])

    async def match(q: str) -> list[str]:
        return (await _all_pages(store, agent_id, 2, q=q))[0]

    assert await match("USER:") == ["user:bob", "User:Alice"]
    assert await match("alice") == ["User:Alice"]
    assert await match("%") == ["100%"]
    assert await match("_") == ["a_b"]
    assert await match("a_") == ["a_b"]
    assert await match("\\") == ["a\\b"]
    assert await match("nothing") == []


@pytest.mark.parametrize("after", ["not a cursor!", "bm9wZQ", "WzEsMl0", "WyJ4IiwiYSJd",
                                   "W3RydWUsImEiXQ", ""])
async def test_a_cursor_this_daemon_did_not_give_is_refused(store: Store, after: str) -> None:
    agent_id = await _agent(store)
    with pytest.raises(InvalidInput) as caught:
        await store.session_page(agent_id, limit=10, after=after)
    assert [e["field"] for e in caught.value.details["errors"]] == ["query.after"]


@pytest.mark.parametrize("limit", [0, -1, 1001])
async def test_a_limit_out_of_range_is_refused(store: Store, limit: int) -> None:
    with pytest.raises(InvalidInput) as caught:
        await store.session_page("a-nobody", limit=limit)
    assert [e["field"] for e in caught.value.details["errors"]] == ["query.limit"]


async def test_the_sqlite_plan_walks_the_recent_sessions_index(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'plan.db'}")
    try:
        agent_id = await _agent(store)
        await _sessions(store, agent_id, [(f"s{i}", f"k{i}", float(i)) for i in range(50)])
        first = await store.session_page(agent_id, limit=10)
    finally:
        await store.close()
    seen: list[tuple[str, tuple[object, ...]]] = []

    class Recorder:
        def all(self, sql: str, params: tuple[object, ...] = ()) -> list[object]:
            seen.append((sql, params))
            return []

    list_sessions(Recorder(), agent_id, limit=10)  # type: ignore[arg-type]
    list_sessions(Recorder(), agent_id, limit=10, after=first.next_after,  # type: ignore[arg-type]
                  q="k")
    conn = sqlite3.connect(tmp_path / "plan.db")
    try:
        for sql, params in seen:
            plan = " ".join(str(r[3]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql,
                                                            params))
            assert "USING INDEX sessions_recent" in plan, plan
            assert "TEMP B-TREE" not in plan, plan  # the index gives the order: no sort
    finally:
        conn.close()
