"""Full-text search on PostgreSQL stays bounded in large namespaces
(agentd.store._pg_fulltext): the rarest lexemes' matches are ranked, by the table's
statistics when it has them and by a sample of the newest entries when it has none;
namespaces and filters are kept and no query text is read as query syntax. The size
threshold and the budget are lowered so that a few hundred entries are "large"."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest

from agentd.store import Store, _fulltext, _pg_fulltext, open_store
from agentd.store.entries import EntryFilter, NewEntry

pytestmark = pytest.mark.postgres

A, B = "agent:a", "agent:b"


@pytest.fixture
async def pg(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Store]:
    monkeypatch.setattr(_fulltext, "SMALL", 100)
    monkeypatch.setattr(_pg_fulltext, "BUDGET", 50)
    monkeypatch.setattr(_pg_fulltext, "SAMPLE", 100)
    store = await open_store(pg_url)
    yield store
    await store.close()


def _analyze(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE memory_entries")


def _has_statistics(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT 1 FROM pg_stats WHERE schemaname = current_schema() AND "
            "tablename = 'memory_entries' AND attname = 'content_tsv'").fetchone() is not None


async def _fill(store: Store, namespace: str, texts: list[str],
                tags: tuple[str, ...] = ()) -> dict[int, str]:
    inserted = await store.insert_entries(
        [NewEntry(namespace=namespace, content=t, tags=tags) for t in texts])
    return {r.n: r.content for r, _ in inserted}


@pytest.mark.parametrize("analyzed", [True, False], ids=["statistics", "sampled"])
async def test_a_large_namespace_ranks_its_rarest_words(
        pg: Store, pg_url: str, analyzed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not analyzed:  # the daemon's own ANALYZE after writes is tested below
        monkeypatch.setattr(_pg_fulltext, "analyze_if_stale", lambda tx, stats: False)
    rare = ["common zebra stripes", "a zebra crossing", "zebra"]
    stored = await _fill(pg, A, rare + [f"common note number {i}" for i in range(300)])
    if analyzed:
        _analyze(pg_url)
    assert _has_statistics(pg_url) is analyzed
    # "common" is in 301 entries, over the budget of 50: its matches are not all
    # ranked, and the three holding "zebra" (rare) come first.
    hits = await pg.fulltext_entries([A], "common zebra", None, 5)
    assert sorted(stored[n] for n, _ in hits[:3]) == sorted(rare)
    assert all(score > 0 for _, score in hits)
    # Common words only: still answered, from the newest entries holding them all.
    common = await pg.fulltext_entries([A], "common note", None, 10)
    assert len(common) == 10
    assert all(stored[n].startswith("common note") for n, _ in common)
    assert {n for n, _ in common} == set(sorted(stored)[-10:])


async def test_statistics_are_read_and_kept(pg: Store, pg_url: str) -> None:
    await _fill(pg, A, [f"common note number {i}" for i in range(300)])
    _analyze(pg_url)
    stats = _pg_fulltext.Stats()
    table = await pg.engine.read(stats.table)
    assert table.analyzed and table.rows >= 300
    assert table.freqs["common"] == pytest.approx(1.0)
    assert 0 < table.floor <= min(table.freqs.values())
    # Kept for a while: entries written meanwhile are not seen until it is read again.
    await _fill(pg, A, [f"fresh entry {i}" for i in range(5)])
    _analyze(pg_url)
    assert await pg.engine.read(stats.table) is table
    stats.forget()
    assert "fresh" in (await pg.engine.read(stats.table)).freqs


async def test_the_daemon_analyzes_a_large_table_without_statistics(
        pg: Store, pg_url: str) -> None:
    await _fill(pg, A, [f"entry {i}" for i in range(5)])
    assert not _has_statistics(pg_url)  # 5 entries: not large, not analyzed
    pg._text_stats.forget()
    pg._text_stats._checked_at = float("-inf")  # the once-a-minute check is due again
    await _fill(pg, A, [f"common entry {i}" for i in range(130)])
    assert _has_statistics(pg_url)


async def test_large_namespaces_keep_to_themselves_and_their_filters(
        pg: Store, pg_url: str) -> None:
    mine = await pg.insert_entries([NewEntry(namespace=A, content=f"shared word {i}",
                                             tags=("t",) if i % 2 else ())
                                    for i in range(150)])
    await _fill(pg, B, [f"shared word other {i}" for i in range(400)])
    _analyze(pg_url)
    own = {r.n for r, _ in mine}
    # B's entries are newer: the newest matches are A's newest, not B's.
    hits = await pg.fulltext_entries([A], "shared word", None, 40)
    assert len(hits) == 40 and {n for n, _ in hits} <= own
    tagged = await pg.fulltext_entries([A], "shared word", EntryFilter(tags_all=("t",)), 40)
    assert len(tagged) == 40
    assert {n for n, _ in tagged} <= {r.n for r, _ in mine if "t" in r.tags}
    assert await pg.fulltext_entries(["agent:c"], "shared word", None, 50) == []


@pytest.mark.parametrize("analyzed", [True, False], ids=["statistics", "sampled"])
async def test_query_text_is_never_query_syntax(pg: Store, pg_url: str, analyzed: bool
                                                ) -> None:
    stored = await _fill(pg, A, [f"plain text {i}" for i in range(100)]
                         + ["o'brien said a\\b and c|d"])
    if analyzed:
        _analyze(pg_url)
    hostile = ["o'brien", "'; DROP TABLE memory_entries; --", "a\\b", "\\", "'''",
               "a & b | !c:* (d) <-> e", "!!!:*&|()", "c|d", "text:* & !plain",
               "brien " + " ".join(f"word{i}" for i in range(100))]  # 64 words are kept
    for query in hostile:
        hits = await pg.fulltext_entries([A], query, None, 10)
        if "brien" in query or "c|d" in query:
            assert "o'brien said a\\b and c|d" in [stored[n] for n, _ in hits], query
    assert await pg.count_entries(A) == 101
