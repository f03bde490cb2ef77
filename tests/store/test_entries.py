"""Long-term memory entries in the store, unchanged on SQLite and PostgreSQL (and on
PostgreSQL with and without pgvector)."""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import AsyncIterator

import psycopg
import pytest
from tests.conftest import pgvector_available

from agentd.errors import Conflict, InvalidInput, NotFound
from agentd.store import Store, open_store
from agentd.store.entries import EntryChange, EntryFilter, NewEntry

A = "agent:a1"
S = "ns:team"
EMB = "test:unit-3d"


def new(content: str, namespace: str = A, **kw: object) -> NewEntry:
    return NewEntry(namespace=namespace, content=content, **kw)  # type: ignore[arg-type]


def vec(*xs: float) -> bytes:
    return struct.pack(f"<{len(xs)}f", *xs)


async def add(store: Store, *contents: str, namespace: str = A) -> list[int]:
    done = await store.insert_entries([new(c, namespace) for c in contents])
    return [r.n for r, _created in done]


async def test_insert_dedupes_normalised_content(store: Store) -> None:
    done = await store.insert_entries([
        new("Hello  World", tags=["greet", "greet", "x"], metadata={"k": 1},
            source_session="s1", source_run="r1", source_seq=7, agent_id="a1",
            tainted="web page"),
        new("  hello world "),  # duplicate of the first, inside the batch
        new("HELLO\tWORLD", namespace=S),  # another namespace: not a duplicate
        new("\uff48\uff45\uff4c\uff4c\uff4f world"),  # NFKC: fullwidth letters are the same text
    ])
    (first, c1), (dup, c2), (other, c3), (wide, c4) = done
    assert (c1, c2, c3, c4) == (True, False, True, False)
    assert dup == first and wide == first
    assert first.id.startswith("mem_") and first.n > 0 and other.n != first.n
    assert (first.content, first.tags, first.metadata, first.version) == (
        "Hello  World", ("greet", "x"), {"k": 1}, 1)
    assert (first.source_session, first.source_run, first.source_seq, first.agent_id,
            first.tainted) == ("s1", "r1", 7, "a1", "web page")
    # A later write of the same text names the stored entry and writes nothing.
    (again, created), = await store.insert_entries([new("hello WORLD")])
    assert not created and again == first
    assert await store.count("memory_entries") == 2
    assert await store.get_entry([A], first.id) == first
    assert await store.get_entry([S], first.id) is None  # not in that namespace
    assert await store.count_entries(A) == 1


@pytest.mark.parametrize(("item", "field"), [
    (new(""), "entries[1].content"),
    (new(" \n\t "), "entries[1].content"),
    (new("nul\x00byte"), "entries[1].content"),
    (new("x", metadata={"score": math.nan}), "entries[1].metadata.score"),
    (new("x", metadata={"deep": [1, {"v": math.inf}]}), "entries[1].metadata.deep[1].v"),
    (new("x", metadata={"o": object()}), "entries[1].metadata.o"),
    (new("x", metadata=[1]), "entries[1].metadata"),  # type: ignore[arg-type]
    (new("x", tags="one"), "entries[1].tags"),  # type: ignore[arg-type]
    (new("x", tags=[""]), "entries[1].tags[0]"),
    (new("x", namespace=""), "entries[1].namespace"),
])
async def test_a_bad_item_writes_nothing_of_the_batch(store: Store, item: NewEntry,
                                                      field: str) -> None:
    with pytest.raises(InvalidInput) as bad:
        await store.insert_entries([new("fine one"), item, new("fine two")])
    assert bad.value.details["errors"][0]["field"] == field
    assert await store.count("memory_entries") == 0
    assert await store.count("memory_tags") == 0
    assert await store.fulltext_entries([A], "fine") == []


async def test_fulltext_ranks_and_stems(store: Store) -> None:
    ns = await add(store, "The cat sat on the mat.", "Dogs are running in the park",
                   "A cat and another cat chased the cat toy", "Nothing to see here")
    await add(store, "cat in another namespace", namespace=S)
    hits = await store.fulltext_entries([A], "cat")
    assert [n for n, _ in hits] == [ns[2], ns[0]]  # three cats before one
    assert hits[0][1] > hits[1][1] > 0
    # Words are OR'd; stemming finds "running" from "runs"; case does not matter.
    assert {n for n, _ in await store.fulltext_entries([A], "RUNS mat")} == {ns[1], ns[0]}
    both = await store.fulltext_entries([A, S], "cat", limit=2)
    assert len(both) == 2
    assert len(await store.fulltext_entries([A, S], "cat")) == 3


@pytest.mark.parametrize("query", ['"', 'cat"', 'NEAR(cat', "cat*", "*", "AND OR NOT",
                                   "cat AND", "-cat", "cat:mat", "^cat", "(cat) OR (",
                                   "{cat}", "cat'; DROP TABLE memory_entries; --",
                                   "col:cat", "\\", "%", "?", "cat & | ! <-> :*"])
async def test_fulltext_queries_are_never_syntax(store: Store, query: str) -> None:
    ns = await add(store, "the cat sat", "and or not near")
    hits = await store.fulltext_entries([A], query)
    words = {w.lower() for w in query.replace("'", " ").split()}
    if "cat" in " ".join(words):
        assert ns[0] in [n for n, _ in hits]
    assert await store.count("memory_entries") == 2


async def test_fulltext_empty_and_unicode(store: Store) -> None:
    ns = await add(store, "Café au lait in Zürich", "東京 is a city", "emoji 🎉 party")
    for query in ("", "   ", "!!! ... ???", "🎉"):
        assert await store.fulltext_entries([A], query) == []
    assert [n for n, _ in await store.fulltext_entries([A], "zürich")] == [ns[0]]
    assert [n for n, _ in await store.fulltext_entries([A], "party!")] == [ns[2]]
    assert ns[1] in [n for n, _ in await store.fulltext_entries([A], "東京")]
    assert await store.fulltext_entries([], "cafe") == []


async def test_filters(store: Store) -> None:
    done = await store.insert_entries([
        new("alpha note", tags=["work", "urgent"], metadata={"p": 1, "who": "ann",
                                                             "ok": True, "none": None}),
        new("beta note", tags=["work"], metadata={"p": 2.0, "who": "bob", "ok": False}),
        new("gamma note", tags=["home"], metadata={"p": "1", "who": "ann"}),
    ])
    a, b, c = (r for r, _ in done)

    async def ids(f: EntryFilter) -> list[str]:
        listed = await store.list_entries([A], f)
        hits = {n for n, _ in await store.fulltext_entries([A], "note", f)}
        allowed = set(await store.allowed_entries([A], f))
        assert hits == allowed == {e.n for e in listed}
        return sorted(e.content.split()[0] for e in listed)

    assert await ids(EntryFilter(tags_all=("work",))) == ["alpha", "beta"]
    assert await ids(EntryFilter(tags_all=("work", "urgent"))) == ["alpha"]
    assert await ids(EntryFilter(tags_any=("urgent", "home"))) == ["alpha", "gamma"]
    assert await ids(EntryFilter(metadata={"who": "ann"})) == ["alpha", "gamma"]
    assert await ids(EntryFilter(metadata={"p": 1})) == ["alpha"]  # not the string "1"
    assert await ids(EntryFilter(metadata={"p": 2})) == ["beta"]  # 2 == 2.0
    assert await ids(EntryFilter(metadata={"p": "1"})) == ["gamma"]
    assert await ids(EntryFilter(metadata={"ok": True})) == ["alpha"]
    assert await ids(EntryFilter(metadata={"ok": False})) == ["beta"]
    assert await ids(EntryFilter(metadata={"none": None})) == ["alpha"]
    assert await ids(EntryFilter(metadata={"missing": "x"})) == []
    assert await ids(EntryFilter(metadata={"who'); --": "x"})) == []
    assert await ids(EntryFilter(created_after=a.created_at - 1,
                                 created_before=a.created_at + 1)) == ["alpha", "beta",
                                                                       "gamma"]
    assert await ids(EntryFilter(created_after=a.created_at)) == []
    await store.update_entry([A], b.id, EntryChange(tags=["home"]))
    assert await ids(EntryFilter(updated_after=c.updated_at)) == ["beta"]
    assert await ids(EntryFilter(tags_all=("home",))) == ["beta", "gamma"]
    for bad, field in ((EntryFilter(metadata={"x": [1]}), "filters.metadata.x"),
                       (EntryFilter(metadata={"x": math.nan}), "filters.metadata.x"),
                       (EntryFilter(created_after=math.inf), "filters.created_after")):
        with pytest.raises(InvalidInput) as err:
            await store.list_entries([A], filters=bad)
        assert err.value.details["errors"][0]["field"] == field


async def test_list_pages_newest_first(store: Store) -> None:
    for i in range(5):  # separate commits: separate created_at
        await add(store, f"entry {i}")
    # An import keeps the time an entry was written: it sorts among the old ones.
    (old, _), = await store.insert_entries([new("imported", created_at=1_000.0)])
    assert (old.created_at, old.updated_at) == (1_000.0, 1_000.0)
    page = await store.list_entries([A], limit=2)
    seen = [e.content for e in page]
    while len(page) == 2:
        page = await store.list_entries([A], limit=2, before=page[-1].id)
        seen += [e.content for e in page]
    assert seen == [f"entry {i}" for i in reversed(range(5))] + ["imported"]
    with pytest.raises(InvalidInput) as gone:
        await store.list_entries([A], before="mem_nope")
    assert gone.value.details["errors"][0]["field"] == "query.before"
    with pytest.raises(InvalidInput):
        await store.list_entries([A], limit=0)
    with pytest.raises(InvalidInput):
        await store.insert_entries([new("x", created_at=math.nan)])


async def test_update(store: Store) -> None:
    (e, _), (other, _) = await store.insert_entries([new("old text", tags=["t"]),
                                                     new("other text")])
    e2 = await store.update_entry([A], e.id, EntryChange(metadata={"m": 1}, tainted="x"),
                                  expect_version=1)
    assert (e2.version, e2.content, e2.metadata, e2.tainted) == (2, "old text", {"m": 1},
                                                                 "x")
    assert e2.updated_at >= e.updated_at and e2.created_at == e.created_at
    assert await store.get_entry([A], e.id) == e2
    with pytest.raises(Conflict) as stale:
        await store.update_entry([A], e.id, EntryChange(content="x"), expect_version=1)
    assert stale.value.code == "entry_changed"
    with pytest.raises(Conflict) as dup:
        await store.update_entry([A], e.id, EntryChange(content="OTHER   text"))
    assert dup.value.details["existing"] == other.id
    with pytest.raises(NotFound):
        await store.update_entry([S], e.id, EntryChange(content="new"))
    with pytest.raises(InvalidInput):
        await store.update_entry([A], e.id, EntryChange(content=" "))
    e3 = await store.update_entry([A], e.id, EntryChange(content="Old Text", tainted=""))
    assert (e3.content, e3.tainted, e3.tags, e3.version) == ("Old Text", None, ("t",), 3)
    e4 = await store.update_entry([A], e.id, EntryChange(content="brand new words",
                                                         tainted="from a tool"))
    assert e4.tainted == "from a tool"
    assert (await store.update_entry([A], e.id, EntryChange())).tainted == "from a tool"
    assert [n for n, _ in await store.fulltext_entries([A], "brand")] == [e.n]
    assert await store.fulltext_entries([A], "old") == []
    assert e4.version == 4 and (await store.get_entry([A], e.id)).version == 5


async def test_vectors_stamps_tombstones(store: Store) -> None:
    ns = await add(store, "one", "two", "three")
    pend = await store.pending_embeddings(EMB, 10)
    assert [(p.n, p.namespace, p.content, p.version) for p in pend] == [
        (ns[0], A, "one", 1), (ns[1], A, "two", 1), (ns[2], A, "three", 1)]
    assert await store.pending_embeddings(EMB, 10, namespaces=[S]) == []
    e1 = (await store.entries_by_n([A], [ns[1]]))[ns[1]]
    await store.update_entry([A], e1.id, EntryChange(content="two, changed"))  # version 2
    written = await store.put_vectors(EMB, [(p.n, vec(1, p.n, 0), p.version) for p in pend])
    assert written == [ns[0], ns[2]]  # the changed entry is skipped: still pending
    assert [p.n for p in await store.pending_embeddings(EMB, 10)] == [ns[1]]
    assert await store.count_vectors(A, EMB) == 2
    got = await store.vectors_since(A, EMB, 0)
    assert [(n, v) for n, v, _ in got] == [(ns[0], vec(1, ns[0], 0)),
                                           (ns[2], vec(1, ns[2], 0))]
    stamps = [s for _, _, s in got]
    assert stamps == sorted(stamps) and len(set(stamps)) == 2
    assert await store.max_stamp() == stamps[-1]
    # Paging by stamp.
    first = await store.vectors_since(A, EMB, 0, limit=1)
    rest = await store.vectors_since(A, EMB, first[-1][2], limit=1)
    assert [n for n, _, _ in first + rest] == [ns[0], ns[2]]
    assert await store.vectors_since(A, "other:embedder", 0) == []
    # New content: the old vector goes with a tombstone; the entry waits again.
    e0 = (await store.entries_by_n([A], [ns[0]]))[ns[0]]
    await store.update_entry([A], e0.id, EntryChange(content="one, again"))
    tomb = await store.vector_tombstones_since(A, 0)
    assert [n for n, _ in tomb] == [ns[0]] and tomb[0][1] > stamps[-1]
    assert {p.n for p in await store.pending_embeddings(EMB, 10)} == {ns[0], ns[1]}
    # Re-embedding writes a newer stamp than the tombstone: applied in stamp order,
    # the index ends up holding the vector.
    assert await store.put_vectors(EMB, [(ns[0], vec(0, 1, 0), 2)]) == [ns[0]]
    latest = await store.vectors_since(A, EMB, tomb[0][1])
    assert [(n, v) for n, v, _ in latest] == [(ns[0], vec(0, 1, 0))]
    # Deleting: a tombstone for an entry that had a vector, none for one that had not.
    await store.delete_entry([A], e0.id)
    await store.delete_entry([A], e1.id)
    assert [n for n, _ in await store.vector_tombstones_since(A, tomb[0][1])] == [ns[0]]
    assert await store.vector_tombstones_since(A, 0, until=tomb[0][1]) == tomb
    assert await store.count("memory_vectors") == 1
    with pytest.raises(NotFound):
        await store.delete_entry([A], e0.id)
    assert await store.put_vectors(EMB, [(e0.n, vec(1, 1, 1), 2)]) == []  # gone
    with pytest.raises(InvalidInput):
        await store.put_vectors(EMB, [(ns[2], b"abc", 1)])
    with pytest.raises(InvalidInput):
        await store.put_vectors("bad name'", [(ns[2], vec(1), 1)])


async def test_changing_embedder_requeues(store: Store) -> None:
    ns = await add(store, "one", "two")
    assert len(await store.pending_embeddings(EMB, 10)) == 2
    await store.put_vectors(EMB, [(n, vec(1, 2, 3), 1) for n in ns])
    assert await store.pending_embeddings(EMB, 10) == []
    # Another embedder (the daemon's setting changed): everything waits again, and
    # the old vectors leave with tombstones.
    assert [p.n for p in await store.pending_embeddings("test:other", 10)] == ns
    assert [n for n, _ in await store.vector_tombstones_since(A, 0)] == ns
    assert await store.count("memory_vectors") == 0
    assert await store.requeue_embeddings("test:other") == 0


async def test_deleting_an_agent_deletes_its_namespace(store: Store) -> None:
    agent = await store.create_agent(name="a", model="scripted", instructions="",
                                     tools=[], settings={})
    own = f"agent:{agent.id}"
    ns = await add(store, "mine", "also mine", namespace=own)
    await add(store, "shared", namespace=S)
    await store.put_vectors(EMB, [(ns[0], vec(1, 0, 0), 1)])
    await store.delete_agent("a")
    assert await store.count_entries(own) == 0
    assert await store.count_entries(S) == 1
    assert await store.count("memory_vectors") == 0
    assert await store.count("memory_tags") == 0
    assert [n for n, _ in await store.vector_tombstones_since(own, 0)] == [ns[0]]
    assert await store.delete_namespace(S) == 1


async def test_searchable_after_reopening(store_url: str) -> None:
    first = await open_store(store_url)
    try:
        (e, _), = await first.insert_entries([new("persisted across restarts")])
        assert [n for n, _ in await first.fulltext_entries([A], "restart")] == [e.n]
    finally:
        await first.close()
    again = await open_store(store_url)
    try:
        assert [n for n, _ in await again.fulltext_entries([A], "persisted")] == [e.n]
        assert await again.get_entry([A], e.id) == e
        (dup, created), = await again.insert_entries([new("Persisted across restarts")])
        assert not created and dup.id == e.id
    finally:
        await again.close()


# -- pgvector ------------------------------------------------------------------------------


@pytest.fixture
async def pg_store(pg_url: str) -> AsyncIterator[Store]:
    st = await open_store(pg_url)
    yield st
    await st.close()


async def test_sqlite_has_no_pgvector(tmp_path: object) -> None:
    st = await open_store(f"sqlite:///{tmp_path}/x.db")
    try:
        assert await st.ensure_pgvector(3, EMB) is False
    finally:
        await st.close()


@pytest.mark.postgres
async def test_without_pgvector_set_up(pg_store: Store) -> None:
    # The daemon's pgvector setting off: ensure_pgvector is never called.
    with pytest.raises(RuntimeError):  # nothing set up in this schema
        await pg_store.vector_search([A], EMB, 3, vec(1, 0, 0), 5)
    # The rest works without it: vectors are stored for an index outside the database.
    ns = await add(pg_store, "one")
    assert await pg_store.put_vectors(EMB, [(ns[0], vec(1, 0, 0), 1)]) == ns


@pytest.mark.postgres
async def test_pgvector_search(pg_store: Store, pg_url: str) -> None:
    if not pgvector_available(pg_url):
        pytest.skip("pgvector is not installed (scripts/install-pgvector.sh)")
    ns = await add(pg_store, "east", "north", "north-east", "south")
    shared = await add(pg_store, "shared north", namespace=S)
    vectors = {ns[0]: vec(1, 0, 0), ns[1]: vec(0, 1, 0), ns[2]: vec(1, 1, 0),
               ns[3]: vec(0, -1, 0), shared[0]: vec(0, 1, 0.1)}
    # Two vectors stored before pgvector is set up: copied in by ensure_pgvector.
    await pg_store.put_vectors(EMB, [(n, vectors[n], 1) for n in ns[:2]])
    assert await pg_store.ensure_pgvector(EMB, 3) is True
    assert await pg_store.ensure_pgvector(EMB, 3) is True  # idempotent
    await pg_store.put_vectors(EMB, [(n, vectors[n], 1) for n in ns[2:] + shared])
    hits = await pg_store.vector_search([A], EMB, 3, [0.0, 1.0, 0.0], 3)
    assert [n for n, _ in hits] == [ns[1], ns[2], ns[0]]
    assert hits[0][1] == pytest.approx(1.0)
    assert hits[1][1] == pytest.approx(math.sqrt(0.5))
    both = await pg_store.vector_search([A, S], EMB, 3, vec(0, 1, 0), 2)
    assert [n for n, _ in both] == [ns[1], shared[0]]
    e2 = (await pg_store.entries_by_n([A], [ns[2]]))[ns[2]]
    await pg_store.update_entry([A], e2.id, EntryChange(tags=["x"]))  # no re-embed
    hits = await pg_store.vector_search([A], EMB, 3, vec(0, 1, 0), 5,
                                        filters=EntryFilter(tags_all=("x",)))
    assert [n for n, _ in hits] == [ns[2]]
    # A content change drops the vector from the index; a delete too.
    await pg_store.update_entry([A], e2.id, EntryChange(content="changed"))
    e1 = (await pg_store.entries_by_n([A], [ns[1]]))[ns[1]]
    await pg_store.delete_entry([A], e1.id)
    hits = await pg_store.vector_search([A], EMB, 3, vec(0, 1, 0), 5)
    assert [n for n, _ in hits] == [ns[0], ns[3]]
    with pytest.raises(InvalidInput):
        await pg_store.vector_search([A], EMB, 3, vec(1, 0), 5)
    # The HNSW index serves a query of the shape vector_search sends (the planner may
    # scan a tiny table instead, so scanning is switched off to see that it can).
    with psycopg.connect(pg_url) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(str(r[0]) for r in conn.execute(
            f"EXPLAIN SELECT n FROM memory_pgvec p WHERE p.embedder = '{EMB}' ORDER BY "
            "(p.embedding::public.vector(3)) OPERATOR(public.<=>) "
            "('[0,1,0]'::public.vector(3)) LIMIT 3").fetchall())
        assert "memory_pgvec_hnsw_" in plan, plan


async def test_concurrent_duplicates_store_one(store: Store) -> None:
    """Writers racing with the same text (on PostgreSQL, in parallel transactions):
    one entry is stored and every writer is answered with it."""
    results = await asyncio.gather(*(store.insert_entries([new("race me", tags=["t"]),
                                                           new(f"own {i}")])
                                     for i in range(8)))
    winners = [r for batch in results for r, created in batch[:1] if created]
    assert len(winners) == 1
    assert {batch[0][0].id for batch in results} == {winners[0].id}
    assert await store.count_entries(A) == 9
    assert await store.count("memory_tags") == 1


async def test_neighbours_are_the_entries_written_around_each(store: Store) -> None:
    ns = await add(store, "one", "two", "three", "four")
    other = await add(store, "elsewhere", namespace=S)
    ns += await add(store, "five")
    tagged = await store.insert_entries([new("six", tags=["x"])])
    six = tagged[0][0].n
    got = await store.entry_neighbours([A], [*ns, six])
    assert got[ns[0]] == (None, ns[1])
    assert got[ns[1]] == (ns[0], ns[2])
    # Another namespace's entry in between is skipped over, not taken.
    assert got[ns[3]] == (ns[2], ns[4])
    assert got[ns[4]] == (ns[3], six)
    assert got[six] == (ns[4], None)
    # Only neighbours among the keys asked about: "two" is not one, so "one" and
    # "three" have none on that side (they are not next to each other).
    some = await store.entry_neighbours([A], [ns[0], ns[2], ns[3]])
    assert some == {ns[0]: (None, None), ns[2]: (None, ns[3]), ns[3]: (ns[2], None)}
    # Filters: an entry the search may not return is no neighbour, and no gap either.
    only_x = await store.entry_neighbours([A], [ns[4], six], EntryFilter(tags_all=("x",)))
    assert only_x == {six: (None, None)}
    # Keys of other namespaces are not answered for.
    assert await store.entry_neighbours([A], other) == {}
    # Entries written far apart (by keys) are no neighbours.
    await store.insert_entries([new(f"filler {i}", S) for i in range(80)])
    late = await add(store, "much later")
    assert (await store.entry_neighbours([A], [six, *late]))[late[0]] == (None, None)


async def test_vectors_written_with_their_entries_are_never_pending(store: Store) -> None:
    done = await store.insert_entries([new("alpha"), new("beta"), new("alpha")],
                                      vectors=(EMB, [vec(1, 0, 0), vec(0, 1, 0),
                                                     vec(1, 0, 0)]))
    assert [created for _, created in done] == [True, True, False]
    assert await store.pending_embeddings(EMB, 10) == []
    assert await store.count_vectors(A, EMB) == 2
    rows = await store.vectors_since(A, EMB, 0)
    assert {(n, v) for n, v, _ in rows} == {(done[0][0].n, vec(1, 0, 0)),
                                            (done[1][0].n, vec(0, 1, 0))}
    # An update with a vector stores it with the new content.
    await store.update_entry([A], done[1][0].id, EntryChange(content="gamma"),
                             vector=(EMB, vec(0, 0, 1)))
    assert await store.pending_embeddings(EMB, 10) == []
    latest = {n: v for n, v, _ in await store.vectors_since(A, EMB, 0)}
    assert latest[done[1][0].n] == vec(0, 0, 1)


async def test_fulltext_in_a_large_namespace_ranks_the_rarest_words(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """When a query's terms are held by more entries than the budget
    (agentd.store._fulltext), the entries holding the rare term come first, the
    newest matches when every term is common; namespaces and filters are kept."""
    from agentd.store import _fulltext

    monkeypatch.setattr(_fulltext, "BUDGET", 40)
    monkeypatch.setattr(_fulltext, "NEWEST", 40)
    texts = [f"common filler number {i}" for i in range(200)]
    for i in range(5):
        texts.insert(30 * i + 7, f"common walrus sighting {i}")
    done = await store.insert_entries([new(t, tags=["t"] if "walrus" in t else [])
                                       for t in texts])
    await store.insert_entries([new(f"walrus elsewhere {i}", S) for i in range(5)])
    n_of = {r.content: r.n for r, _ in done}
    walrus = {n for c, n in n_of.items() if "walrus" in c}
    found = await store.fulltext_entries([A], "common walrus", limit=10)
    assert {n for n, _ in found[:5]} == walrus
    assert all(n in n_of.values() for n, _ in found)
    # Every word common: the newest of its matches.
    common = await store.fulltext_entries([A], "common", limit=10)
    assert len(common) == 10
    newest = sorted(n_of.values())[-40:]
    assert all(n in newest for n, _ in common)
    # Filters apply.
    tagged = await store.fulltext_entries([A], "common walrus", EntryFilter(tags_all=("t",)),
                                          limit=10)
    assert {n for n, _ in tagged} == walrus


@pytest.mark.postgres
async def test_a_large_vector_table_is_analyzed_so_its_index_is_used(
        pg_store: Store, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the server's autovacuum does not analyze ``memory_pgvec`` (off on this
    project's test server), the planner knows nothing of it, takes a large
    namespace for a tiny one and compares the query with every vector of it instead
    of walking the HNSW index (188 ms rather than 5 at 35,000 entries). The store
    analyzes it, as it does the entries, once it is large and its statistics are
    missing or stale: after that, the search's own query is planned on the index."""
    if not pgvector_available(pg_url):
        pytest.skip("pgvector is not installed (scripts/install-pgvector.sh)")
    from agentd.store import _pg_analyze
    monkeypatch.setattr(_pg_analyze, "ANALYZE_ABOVE", 150)  # ("large": over 150 vectors)
    assert await pg_store.ensure_pgvector(EMB, 3) is True
    ns = await add(pg_store, *(f"entry {i}" for i in range(400)))
    await pg_store.put_vectors(EMB, [(n, vec(math.cos(n), math.sin(n), (n % 7) / 7), 1)
                                     for n in ns])

    def analyzed() -> bool:
        with psycopg.connect(pg_url) as conn:
            row = conn.execute(
                "SELECT COALESCE(last_analyze, last_autoanalyze) IS NOT NULL FROM "
                "pg_stat_user_tables WHERE relid = 'memory_pgvec'::regclass").fetchone()
            return bool(row and row[0])

    def estimate() -> int:
        """The planner's estimate of the namespace's vectors (what it chooses between
        the index and comparing every vector by: at 400 tiny vectors the latter is
        right, at tens of thousands of real ones it is 40 times too slow)."""
        with psycopg.connect(pg_url) as conn:
            row = conn.execute(
                f"EXPLAIN (FORMAT JSON) SELECT p.n FROM memory_pgvec p WHERE "
                f"p.embedder = '{EMB}' AND p.namespace IN ('{A}')").fetchone()
            assert row is not None
            return int(row[0][0]["Plan"]["Plan Rows"])

    assert not analyzed()
    assert estimate() < 100  # (a guess: the table has no statistics)
    pg_store._text_stats._checked_at = float("-inf")  # the once-a-minute look is due
    hits = await pg_store.vector_search([A], EMB, 3, vec(0, 1, 0), 10)
    assert len(hits) == 10
    assert analyzed()
    assert estimate() == 400
