"""Full-text search on SQLite stays bounded at scale (agentd.store._fulltext): small
namespaces are ranked exactly, large ones rank their rarest words' matches or their
newest; namespaces and filters are always kept, and an existing index is rebuilt with
the namespace column by migration 9."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentd.store import Store, _fulltext, open_store
from agentd.store._schema import MIGRATIONS
from agentd.store.entries import EntryFilter, NewEntry

WORDS = [f"w{i}" for i in range(40)]


@pytest.fixture
async def lite(tmp_path: Path) -> AsyncIterator[Store]:
    store = await open_store(f"sqlite:///{tmp_path / 'fts.db'}")
    yield store
    await store.close()


async def _fill(store: Store, namespace: str, texts: list[str]) -> dict[int, str]:
    """Insert the texts; return each one's content by its key (n)."""
    inserted = await store.insert_entries(
        [NewEntry(namespace=namespace, content=t) for t in texts])
    return {r.n: r.content for r, _ in inserted}


def _exact(db: Path, namespace: str, words: list[str], limit: int) -> list[int]:
    """The reference: BM25 over every match of any word, as the search did before."""
    conn = sqlite3.connect(db)
    try:
        match = "content : (" + " OR ".join(f'"{w}"' for w in words) + ")"
        rows = conn.execute(
            "SELECT e.n FROM memory_fts JOIN memory_entries e ON e.n = memory_fts.rowid "
            "WHERE memory_fts MATCH ? AND e.namespace = ? "
            "ORDER BY -bm25(memory_fts, 1.0, 0.0) DESC, e.n DESC LIMIT ?",
            (match, namespace, limit)).fetchall()
    finally:
        conn.close()
    return [int(r[0]) for r in rows]


def _corpus(rng: random.Random, n: int) -> list[str]:
    return list(dict.fromkeys(" ".join(rng.choices(WORDS, k=rng.randint(3, 9)))
                              + f" id{i}" for i in range(n)))


async def test_a_small_namespace_is_ranked_exactly(lite: Store, tmp_path: Path) -> None:
    rng = random.Random(3)
    await _fill(lite, "agent:a", _corpus(rng, 400))
    await _fill(lite, "agent:b", _corpus(rng, 400))
    for _ in range(20):
        words = rng.sample(WORDS, rng.randint(1, 4))
        got = [n for n, _ in await lite.fulltext_entries(["agent:a"], " ".join(words),
                                                         None, 25)]
        assert got == _exact(tmp_path / "fts.db", "agent:a", words, 25)


async def test_a_large_namespace_ranks_its_rarest_words(
        lite: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fulltext, "SMALL", 10)
    monkeypatch.setattr(_fulltext, "BUDGET", 50)
    common = [f"common w1 note {i}" for i in range(300)]
    rare = ["common rare zebra", "rare zebra stripes", "zebra crossing"]
    stored = await _fill(lite, "agent:a", common + rare)
    hits = await lite.fulltext_entries(["agent:a"], "common zebra", None, 3)
    contents = [stored[n] for n, _ in hits]
    # "common" has 301 matches, over the budget: the three holding "zebra" lead.
    assert sorted(contents) == sorted(rare)


async def test_only_common_words_rank_the_newest_entries_holding_them_all(
        lite: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fulltext, "SMALL", 10)
    monkeypatch.setattr(_fulltext, "BUDGET", 40)
    texts = [f"alpha beta entry {i}" if i % 2 else f"alpha entry {i}" for i in range(200)]
    stored = await _fill(lite, "agent:a", texts)
    hits = await lite.fulltext_entries(["agent:a"], "alpha beta", None, 10)
    contents = [stored[n] for n, _ in hits]
    assert len(contents) == 10 and all("beta" in c for c in contents)
    # Fewer entries hold both words than asked: those holding either fill the rest.
    few = await lite.fulltext_entries(["agent:a"], "alpha entry199", None, 30)
    assert len(few) == 30


async def test_large_namespaces_keep_to_themselves_and_their_filters(
        lite: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fulltext, "SMALL", 10)
    monkeypatch.setattr(_fulltext, "BUDGET", 30)
    # Agent a's few entries are older than b's many: a's matches are outside every
    # window of newest matches, so the search must find them the exact way.
    mine = await lite.insert_entries([NewEntry(namespace="agent:a", content=f"shared word {i}",
                                               tags=("t",) if i % 2 else ())
                                      for i in range(20)])
    await lite.insert_entries([NewEntry(namespace="agent:b", content=f"shared word other {i}")
                               for i in range(400)])
    own = {r.n for r, _ in mine}
    hits = await lite.fulltext_entries(["agent:a"], "shared word", None, 50)
    assert {n for n, _ in hits} == own
    tagged = await lite.fulltext_entries(["agent:a"], "shared word",
                                         EntryFilter(tags_all=("t",)), 50)
    assert {n for n, _ in tagged} == {r.n for r, _ in mine if "t" in r.tags}
    assert await lite.fulltext_entries(["agent:c"], "shared word", None, 50) == []


async def test_migration_9_rebuilds_the_index_with_the_namespace(tmp_path: Path) -> None:
    db = tmp_path / "v8.db"
    types = {"real": "REAL", "bigint": "INTEGER", "text": "TEXT", "blob": "BLOB",
             "clustered": " WITHOUT ROWID"}
    conn = sqlite3.connect(db)
    conn.executescript("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                       "name TEXT NOT NULL, applied_at REAL NOT NULL);")
    for version, name, sql in MIGRATIONS:
        if version > 8:
            break
        script = sql if isinstance(sql, str) else sql["sqlite"]
        conn.executescript(script.format(**types))
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (version, name))
    conn.execute("INSERT INTO memory_entries (id, namespace, content, content_hash, "
                 "created_at, updated_at, version) VALUES "
                 "('m1', 'agent:x', 'the lighthouse keeper', 'h1', 1, 1, 1)")
    conn.commit()
    conn.close()
    store = await open_store(f"sqlite:///{db}")
    try:
        hits = await store.fulltext_entries(["agent:x"], "lighthouse", None, 5)
        assert len(hits) == 1
        # The triggers keep the rebuilt index current.
        await store.insert_entries([NewEntry(namespace="agent:x", content="lighthouse two")])
        assert len(await store.fulltext_entries(["agent:x"], "lighthouse", None, 5)) == 2
        assert await store.fulltext_entries(["agent:y"], "lighthouse", None, 5) == []
    finally:
        await store.close()


async def test_search_hits_are_read_by_key_not_through_the_namespace(
        lite: Store, tmp_path: Path) -> None:
    """A search's hits are read by their keys: with the namespace's index SQLite
    reads every entry of the namespace (measured: 150 ms at 1M for 10 hits; SQLite
    3.40 takes that path from 4 keys on)."""
    from agentd.store import entries as _entries

    await _fill(lite, "agent:big", [f"entry {i}" for i in range(50)])
    seen: list[tuple[str, tuple[object, ...]]] = []

    class Recorder:
        def all(self, sql: str, params: tuple[object, ...] = ()) -> list[object]:
            seen.append((sql, params))
            return []

    _entries.get_many_by_n(Recorder(), ["agent:big"], list(range(1, 11)))  # type: ignore[arg-type]
    [(sql, params)] = seen
    conn = sqlite3.connect(tmp_path / "fts.db")
    try:
        plan = " ".join(str(r[3]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
    finally:
        conn.close()
    assert "PRIMARY KEY" in plan and "memory_entries_created" not in plan, plan
    got = await lite.entries_by_n(["agent:big"], [1, 2, 3])
    assert sorted(got) == [1, 2, 3]
    assert await lite.entries_by_n(["agent:other"], [1, 2, 3]) == {}
