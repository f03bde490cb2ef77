"""Full-text search of memory entries (agentd.store._fulltext, _text, _pg_analyze):
BM25 with each namespace's own statistics, the same on SQLite and PostgreSQL; nothing
another namespace holds moves a ranking; the statistics follow every write; large
namespaces are ranked with bounded work; migration 28 indexes what was stored before.
"""

from __future__ import annotations

import math
import random
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from agentd.store import Store, _fulltext, _pg_analyze, _text, open_store
from agentd.store._schema import MIGRATIONS
from agentd.store.entries import EntryChange, EntryFilter, NewEntry

A, B, C = "agent:a", "agent:b", "ns:team"
#: Words the stemmer leaves alone and no stop list holds.
WORDS = [f"w{i}x" for i in range(40)]


def corpus(rng: random.Random, n: int, words: Sequence[str] = WORDS) -> list[str]:
    return list(dict.fromkeys(" ".join(rng.choices(words, k=rng.randint(2, 9)))
                              + f" id{rng.randrange(10**9)}" for _ in range(n)))


async def fill(store: Store, namespace: str, texts: Sequence[str],
               tags: tuple[str, ...] = ()) -> dict[int, str]:
    """Insert the texts; each one's content by its key (n)."""
    done = await store.insert_entries([NewEntry(namespace=namespace, content=t, tags=tags)
                                       for t in texts])
    return {r.n: r.content for r, _ in done}


def reference(entries: dict[int, str], query: str, limit: int) -> list[tuple[int, float]]:
    """Okapi BM25 from its definition over ``entries`` alone (k1 1.2, b 0.75, IDF
    ln(1 + (N - df + 0.5) / (df + 0.5)), length in terms): what the stores must give
    for a namespace whose matches fit the budget."""
    docs = {n: Counter(_text.terms(c)) for n, c in entries.items()}
    avgdl = max(sum(sum(tf.values()) for tf in docs.values()) / len(docs), 1.0)
    q = list(dict.fromkeys(_text.terms(query)))
    scores: dict[int, float] = {}
    for t in q:
        df = sum(1 for tf in docs.values() if t in tf)
        idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
        for n, tf in docs.items():
            if t in tf:
                f = tf[t]
                scores[n] = scores.get(n, 0.0) + idf * f * 2.2 / (
                    f + 1.2 * (0.25 + 0.75 * sum(tf.values()) / avgdl))
    # (Rounded as the stores round: sums equal but for the last bit tie.)
    ranked = {n: _fulltext.rounded(score) for n, score in scores.items()}
    return sorted(ranked.items(), key=lambda kv: (-kv[1], -kv[0]))[:limit]


def same(got: Sequence[tuple[int, float]], want: Sequence[tuple[int, float]]) -> bool:
    return [n for n, _ in got] == [n for n, _ in want] and all(
        math.isclose(a, b, rel_tol=1e-9) for (_, a), (_, b) in zip(got, want, strict=True))


# -- what a ranking is ------------------------------------------------------------------------


async def test_a_ranking_is_bm25_over_the_namespace_alone(store: Store) -> None:
    rng = random.Random(3)
    mine = await fill(store, A, corpus(rng, 300))
    await fill(store, B, corpus(rng, 500, WORDS[:10]))
    for _ in range(25):
        query = " ".join(rng.sample(WORDS, rng.randint(1, 4)))
        got = await store.fulltext_entries([A], query, None, 20)
        assert same(got, reference(mine, query, 20)), query


async def test_another_namespace_never_moves_a_ranking(store: Store) -> None:
    """What another agent (or tenant) stores, with the very words searched for, does
    not change a search's ranked list nor its scores: a ranking depends only on the
    searched namespaces' entries (with one index for all of them, their statistics
    were the whole table's: a tenant could move, and so measure, another's)."""
    rng = random.Random(5)
    await fill(store, A, corpus(rng, 200))
    queries = [" ".join(rng.sample(WORDS, rng.randint(1, 3))) for _ in range(15)]
    before = [await store.fulltext_entries([A], q, None, 10) for q in queries]
    await fill(store, B, corpus(rng, 1500, WORDS[:8]))       # common words, over and over
    await fill(store, C, [f"{w} {w} {w} long entry {i}" for i, w in enumerate(WORDS * 5)])
    assert [await store.fulltext_entries([A], q, None, 10) for q in queries] == before
    await store.delete_namespace(B)
    assert [await store.fulltext_entries([A], q, None, 10) for q in queries] == before


async def test_several_namespaces_share_their_statistics(store: Store) -> None:
    rng = random.Random(9)
    union = {**await fill(store, A, corpus(rng, 120)), **await fill(store, C, corpus(rng, 80))}
    await fill(store, B, corpus(rng, 300))
    for query in ("w1x w2x", "w7x", "w3x w30x w31x"):
        got = await store.fulltext_entries([A, C], query, None, 15)
        assert same(got, reference(union, query, 15))


async def test_stop_words_stems_accents_and_scripts(store: Store) -> None:
    texts = ["The runners were running to the Zürich café", "東京 タワー",
             "nothing but the and of", "A party! at Bob's"]
    ns = list(await fill(store, A, texts))
    assert [n for n, _ in await store.fulltext_entries([A], "run")] == [ns[0]]
    assert [n for n, _ in await store.fulltext_entries([A], "zurich CAFE")] == [ns[0]]
    assert [n for n, _ in await store.fulltext_entries([A], "東京")] == [ns[1]]
    assert [n for n, _ in await store.fulltext_entries([A], "parties")] == [ns[3]]
    # Stop words carry nothing: a query of nothing else finds nothing.
    assert await store.fulltext_entries([A], "the and of") == []


async def test_long_words_and_repeats_are_bounded(store: Store) -> None:
    word = "z" * 5000
    ns = list(await fill(store, A, [f"{word} tail", "tail " * 2000 + "end", "other tail"]))
    assert [n for n, _ in await store.fulltext_entries([A], word)] == [ns[0]]
    hits = await store.fulltext_entries([A], "tail", None, 5)
    assert {n for n, _ in hits} == set(ns)


# -- both stores alike ------------------------------------------------------------------------


@pytest.mark.postgres
async def test_both_stores_rank_the_same_entries_the_same_way(
        pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same entries give the same ranked list with the same scores on SQLite and
    PostgreSQL, on every path: every match ranked, the rarest terms' matches, the
    newest matches, with and without filters."""
    rng = random.Random(11)
    texts = corpus(rng, 400)
    stores = [await open_store(f"sqlite:///{tmp_path / 'a.db'}"), await open_store(pg_url)]
    try:
        for store in stores:
            await store.insert_entries([NewEntry(namespace=A, content=t,
                                                 tags=("t",) if i % 3 else ())
                                        for i, t in enumerate(texts)])
            await fill(store, B, corpus(random.Random(1), 200))
        queries = [" ".join(rng.sample(WORDS, rng.randint(1, 5))) for _ in range(20)]
        for budget in (_fulltext.BUDGET, 150, 20):
            monkeypatch.setattr(_fulltext, "BUDGET", budget)
            monkeypatch.setattr(_fulltext, "NEWEST", 60)
            for query in queries:
                for flt in (None, EntryFilter(tags_all=("t",))):
                    lite, pg = [await s.fulltext_entries([A], query, flt, 10) for s in stores]
                    assert [n for n, _ in lite] == [n for n, _ in pg], (budget, query, flt)
                    assert all(math.isclose(a, b, rel_tol=1e-9)
                               for (_, a), (_, b) in zip(lite, pg, strict=True))
    finally:
        for store in stores:
            await store.close()


# -- the statistics follow every write --------------------------------------------------------


async def _tables(store: Store) -> tuple[dict[str, tuple[int, int]], dict[tuple[str, str], int],
                                         Counter[tuple[str, str, int, int, int]]]:
    def read(tx: Any) -> Any:
        ns = {str(r[0]): (int(r[1]), int(r[2])) for r in tx.all(
            "SELECT namespace, docs, tokens FROM memory_text_ns")}
        names = {int(r[0]): str(r[1]) for r in tx.all("SELECT id, namespace FROM memory_text_ns")}
        df = {(names[int(r[0])], str(r[1])): int(r[2]) for r in tx.all(
            "SELECT ns, term, docs FROM memory_text_df")}
        postings: Counter[tuple[str, str, int, int, int]] = Counter()
        if store.dialect == "sqlite":
            postings.update((names[int(r[0])], str(r[1]), int(r[2]), int(r[3]), int(r[4]))
                            for r in tx.all("SELECT ns, term, n, tf, len FROM memory_postings"))
        return ns, df, postings

    return await store.engine.read(read)  # type: ignore[no-any-return]


async def _recounted(store: Store) -> tuple[dict[str, tuple[int, int]],
                                            dict[tuple[str, str], int],
                                            Counter[tuple[str, str, int, int, int]]]:
    rows = await store.engine.read(lambda tx: tx.all(
        "SELECT n, namespace, content FROM memory_entries"))
    ns: dict[str, tuple[int, int]] = {}
    df: Counter[tuple[str, str]] = Counter()
    postings: Counter[tuple[str, str, int, int, int]] = Counter()
    for n, namespace, content in rows:
        row = _text.TextRow.of(int(n), str(namespace), str(content))
        docs, tokens = ns.get(row.namespace, (0, 0))
        ns[row.namespace] = (docs + 1, tokens + row.length)
        df.update((row.namespace, t) for t in row.tf)
        if store.dialect == "sqlite":
            postings.update((row.namespace, t, row.n, c, row.length) for t, c in row.tf.items())
    return ns, dict(df), postings


async def test_the_statistics_follow_every_write(store: Store) -> None:
    rng = random.Random(17)
    names = [A, B, C]
    for step in range(60):
        action = rng.random()
        namespace = rng.choice(names)
        if action < 0.45:
            texts = corpus(rng, rng.randint(1, 12), WORDS[:12])
            await fill(store, namespace, texts + texts[:2])  # (duplicates are not counted)
        elif action < 0.9:
            listed = await store.list_entries([namespace], limit=50)
            if not listed:
                continue
            entry = rng.choice(listed)
            if action < 0.6:
                await store.delete_entry([namespace], entry.id)
            elif action < 0.75:
                await store.update_entry([namespace], entry.id, EntryChange(
                    content=f"{rng.choice(WORDS)} changed {step}"))
            else:
                await store.update_entry([namespace], entry.id, EntryChange(tags=["x"]))
        elif action < 0.95:
            await store.delete_namespace(namespace)
        assert await _tables(store) == await _recounted(store), step
    ns, _, _ = await _tables(store)
    assert ns  # (something was left to count)


async def test_concurrent_writes_keep_the_statistics(store: Store) -> None:
    """Writers to the same namespaces and entries at once (PostgreSQL: on several
    connections) neither deadlock nor lose a count: inserts, rewrites and deletes of
    the same entries, and a namespace emptied under them. A write that loses a race
    is refused (the entry changed or is gone), never counted twice."""
    import asyncio

    from agentd.errors import Conflict, NotFound

    rng = random.Random(23)
    await fill(store, A, corpus(rng, 40, WORDS[:10]))
    await fill(store, B, corpus(rng, 40, WORDS[:10]))
    listed = await store.list_entries([A], limit=40)
    in_b = await store.list_entries([B], limit=40)

    async def writes(i: int) -> None:
        mine = random.Random(i)
        target = listed[i % 8]
        if i % 5 == 0:
            await fill(store, mine.choice([A, B]), corpus(mine, 15, WORDS[:10]))
        elif i % 5 == 1:
            await store.update_entry([A], target.id, EntryChange(
                content=f"{WORDS[i % 10]} rewritten {i}"))
        elif i % 5 == 2:
            await store.delete_entry([A], target.id)
        elif i % 5 == 3:
            await store.update_entry([B], in_b[i % 8].id, EntryChange(
                content=f"{WORDS[i % 10]} again {i}"))
        else:
            await fill(store, C, corpus(mine, 10, WORDS[:10]))
        if i == 27:
            await store.delete_namespace(B)

    done = await asyncio.gather(*(writes(i) for i in range(40)), return_exceptions=True)
    assert all(r is None or isinstance(r, Conflict | NotFound) for r in done), done
    assert await _tables(store) == await _recounted(store)


# -- bounded work in large namespaces ----------------------------------------------------------


@pytest.fixture
def small_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fulltext, "BUDGET", 50)
    monkeypatch.setattr(_fulltext, "NEWEST", 40)


@pytest.mark.usefixtures("small_budget")
async def test_the_rarest_terms_rank_and_every_term_scores(store: Store) -> None:
    common = [f"common filler number {i}" for i in range(300)]
    rare = ["common zebra crossing", "zebra stripes", "common common zebra"]
    stored = await fill(store, A, common + rare)
    hits = await store.fulltext_entries([A], "common zebra", None, 3)
    # "common" is in 302 entries, over the budget: the entries holding "zebra" are
    # ranked, and "common" still adds its share to them.
    assert sorted(stored[n] for n, _ in hits) == sorted(rare)
    exact = dict(reference(stored, "common zebra", 400))
    assert all(math.isclose(s, exact[n], rel_tol=1e-9) for n, s in hits)
    assert [n for n, _ in hits] == [n for n, _ in reference(stored, "common zebra", 3)]


@pytest.mark.usefixtures("small_budget")
async def test_common_terms_only_rank_the_newest_entries_holding_them(store: Store) -> None:
    stored = await fill(store, A, [f"alpha beta entry {i}" if i % 2 else f"alpha entry {i}"
                                   for i in range(200)])
    hits = await store.fulltext_entries([A], "alpha beta", None, 10)
    newest = set(sorted(stored)[-40:])
    assert len(hits) == 10 and {n for n, _ in hits} <= newest
    assert all("beta" in stored[n] for n, _ in hits)  # (both terms score higher)


@pytest.mark.usefixtures("small_budget")
async def test_large_namespaces_keep_to_themselves_and_their_filters(store: Store) -> None:
    # Agent a's few entries are older than b's many and tagged every other one: the
    # newest matches of b never reach a's ranking, and a filter that keeps little is
    # still answered in full.
    mine = await store.insert_entries([NewEntry(namespace=A, content=f"shared word {i}",
                                                tags=("t",) if i % 2 else ())
                                       for i in range(120)])
    await fill(store, B, [f"shared word other {i}" for i in range(400)])
    own = {r.n for r, _ in mine}
    hits = await store.fulltext_entries([A], "shared word", None, 50)
    assert len(hits) == 50 and {n for n, _ in hits} <= own
    tagged = await store.fulltext_entries([A], "shared word", EntryFilter(tags_all=("t",)),
                                          100)
    assert {n for n, _ in tagged} == {r.n for r, _ in mine if "t" in r.tags}
    assert await store.fulltext_entries(["agent:c"], "shared word", None, 50) == []


async def test_postings_are_read_by_their_key(tmp_path: Path) -> None:
    """SQLite reads a term's postings in the searched namespaces by the primary key
    (namespace, term, entry), never by scanning: what keeps a search fast whatever
    else the table holds."""
    store = await open_store(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        await fill(store, A, corpus(random.Random(2), 50))
        seen: list[tuple[str, tuple[Any, ...]]] = []

        def recorded(tx: Any) -> Any:
            class Recorder:
                def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
                    seen.append((sql, tuple(params)))
                    return tx.all(sql, params)  # type: ignore[no-any-return]

                def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
                    return tx.one(sql, params)

            return _fulltext.search(Recorder(), [A], ["w1x", "w2x"], "e.namespace IN (?)",
                                    [A], False, 10)  # type: ignore[arg-type]

        assert await store.engine.read(recorded)
    finally:
        await store.close()
    conn = sqlite3.connect(tmp_path / "p.db")
    try:
        for sql, params in seen:
            if "memory_postings" in sql:
                plan = " ".join(str(r[3]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql,
                                                                params))
                assert "SCAN p" not in plan and "PRIMARY KEY" in plan, plan
    finally:
        conn.close()


async def test_search_hits_are_read_by_key_not_through_the_namespace(
        tmp_path: Path) -> None:
    """A search's hits are read by their keys: with the namespace's index SQLite
    reads every entry of the namespace (measured: 150 ms at 1M for 10 hits; SQLite
    3.40 takes that path from 4 keys on)."""
    from agentd.store import entries as _entries

    lite = await open_store(f"sqlite:///{tmp_path / 'fts.db'}")
    await fill(lite, "agent:big", [f"entry {i}" for i in range(50)])
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
    try:
        got = await lite.entries_by_n(["agent:big"], [1, 2, 3])
        assert sorted(got) == [1, 2, 3]
        assert await lite.entries_by_n(["agent:other"], [1, 2, 3]) == {}
    finally:
        await lite.close()


# -- migration 28 -----------------------------------------------------------------------------

_OLD = ["the lighthouse keeper waves", "a keeper of bees", "lighthouse lighthouse beam"]


async def _check_migrated(store: Store) -> None:
    hits = await store.fulltext_entries(["agent:x"], "lighthouse keeper", None, 5)
    assert len(hits) == 3
    stored = dict(enumerate(_OLD, start=1))
    by_content = {c: n for n, c in stored.items()}
    rows = await store.engine.read(lambda tx: tx.all(
        "SELECT n, content FROM memory_entries"))
    n_of = {str(c): int(n) for n, c in rows}
    want = reference({n_of[c]: c for c in by_content}, "lighthouse keeper", 5)
    assert same(hits, want)
    assert await _tables(store) == await _recounted(store)
    await store.insert_entries([NewEntry(namespace="agent:x", content="lighthouse two")])
    assert len(await store.fulltext_entries(["agent:x"], "lighthouse", None, 5)) == 3
    assert await store.fulltext_entries(["agent:y"], "lighthouse", None, 5) == []


def _old_rows() -> list[tuple[str, str, str, str]]:
    return [(f"m{i}", "agent:x", c, f"h{i}") for i, c in enumerate(_OLD)]


def _before_28(dialect: str) -> list[tuple[int, str, str]]:
    """Each migration before 28 as ``(version, name, script)`` for ``dialect``."""
    types = ({"real": "REAL", "bigint": "INTEGER", "text": "TEXT",
              "clustered": " WITHOUT ROWID"} if dialect == "sqlite" else
             {"real": "DOUBLE PRECISION", "bigint": "BIGINT", "text": "TEXT", "clustered": ""})
    return [(version, name, (sql if isinstance(sql, str) else sql[dialect]).format(**types))
            for version, name, sql in MIGRATIONS if version < 28]


async def test_migration_28_indexes_what_was_stored_before_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "v27.db"
    conn = sqlite3.connect(db)
    conn.executescript("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                       "name TEXT NOT NULL, applied_at REAL NOT NULL);")
    for version, name, script in _before_28("sqlite"):
        conn.executescript(script)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (version, name))
    conn.executemany("INSERT INTO memory_entries (id, namespace, content, content_hash, "
                     "created_at, updated_at, version) VALUES (?, ?, ?, ?, 1, 1, 1)",
                     _old_rows())
    conn.commit()
    conn.close()
    store = await open_store(f"sqlite:///{db}")
    try:
        await _check_migrated(store)
    finally:
        await store.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'memory_fts%'"
                            ).fetchall() == []
    finally:
        conn.close()


@pytest.mark.postgres
@pytest.mark.empty_schema
async def test_migration_28_indexes_what_was_stored_before_postgresql(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, "
                     "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)")
        for version, name, script in _before_28("postgresql"):
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)  # type: ignore[arg-type]
            conn.execute("INSERT INTO schema_migrations VALUES (%s, %s, 0)", (version, name))
        conn.cursor().executemany(
            "INSERT INTO memory_entries (id, namespace, content, content_hash, created_at, "
            "updated_at, version) VALUES (%s, %s, %s, %s, 1, 1, 1)", _old_rows())
    store = await open_store(pg_url)
    try:
        await _check_migrated(store)
    finally:
        await store.close()


# -- PostgreSQL's planner statistics -----------------------------------------------------------


@pytest.fixture
async def pg(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Store]:
    monkeypatch.setattr(_pg_analyze, "ANALYZE_ABOVE", 100)
    store = await open_store(pg_url)
    yield store
    await store.close()


def _analyzed(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT COALESCE(last_analyze, last_autoanalyze) IS NOT NULL "
                           "FROM pg_stat_user_tables WHERE relid = 'memory_entries'::regclass"
                           ).fetchone()
        return bool(row and row[0])


@pytest.mark.postgres
async def test_the_daemon_analyzes_a_large_table_without_statistics(
        pg: Store, pg_url: str) -> None:
    await fill(pg, A, [f"entry {i}" for i in range(5)])
    assert not _analyzed(pg_url)  # 5 entries: not large, not analyzed
    pg._text_stats._checked_at = float("-inf")  # the once-a-minute check is due again
    await fill(pg, A, [f"common entry {i}" for i in range(130)])
    assert _analyzed(pg_url)


async def test_query_text_is_never_query_syntax(store: Store) -> None:
    stored = await fill(store, A, [f"plain text {i}" for i in range(100)]
                        + ["o'brien said a\\b and c|d"])
    hostile = ["o'brien", "'; DROP TABLE memory_entries; --", "a\\b", "\\", "'''",
               "a & b | !c:* (d) <-> e", "!!!:*&|()", "c|d", "text:* & !plain", "NEAR(a b)",
               'content : "x" OR fts_ns', "brien " + " ".join(f"word{i}" for i in range(100))]
    for query in hostile:
        hits = await store.fulltext_entries([A], query, None, 10)
        if "brien" in query or "c|d" in query:
            assert "o'brien said a\\b and c|d" in [stored[n] for n, _ in hits], query
    assert await store.count_entries(A) == 101
