"""Memory entries' vectors: the embedding pipeline's SQL, stamps, and pgvector.

The database holds the source of truth for vectors (``memory_vectors``: float32
little-endian bytes, one row per entry), so any index outside it is derived data and
can be rebuilt or caught up: every vector written and every tombstone gets a stamp
from the memory clock (``_entries._stamps``), unique and committed in order. An index
that has applied everything up to stamp s reads :func:`vectors_since` and
:func:`tombstones_since` past s and applies both in stamp order.

On PostgreSQL with the pgvector extension, :func:`ensure_pgvector` adds
``memory_pgvec`` (the same vectors as ``vector`` values) with an HNSW index per
embedder; :func:`put_vectors` keeps it in step whenever the table exists, and
:func:`vector_search` searches it. The migrations never need the extension.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import sys
from array import array
from collections.abc import Sequence
from typing import NamedTuple

from agentd.errors import InvalidInput
from agentd.store.engine import Tx
from agentd.store.entries import (
    MAX_PAGE,
    EntryFilter,
    _chunks,
    _has_pgvec,
    _marks,
    _namespaces,
    _stamps,
    _where,
    drop_vectors,
)

__all__ = ["Pending", "PgVector", "count_vectors", "ensure_pgvector", "max_stamp", "pending",
           "pgvector_setup", "put_vectors", "requeue", "tombstones_since", "vector_search",
           "vectors_since"]

log = logging.getLogger(__name__)

_LOCK = 872102  # pg_advisory_xact_lock key (migrations 872100, sandbox uids 872101)
#: Embedder names go into DDL and into SQL text (a partial index's predicate must be
#: a literal for the planner to use it), so they are held to a plain alphabet.
_EMBEDDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]{0,127}\Z")
#: pgvector's HNSW indexes take vectors of at most this many dimensions.
_HNSW_MAX_DIM = 2000


def _embedder(name: str) -> str:
    if not isinstance(name, str) or not _EMBEDDER.match(name):
        raise InvalidInput(f"embedder name {name!r} is not one of letters, digits and "
                           "_.:/@+-", field="embedder")
    return name


def _floats(vec: bytes | bytearray | memoryview | Sequence[float], where: str) -> array[float]:
    if isinstance(vec, bytes | bytearray | memoryview):
        raw = bytes(vec)
        if not raw or len(raw) % 4:
            raise InvalidInput(f"{where}: a vector is a non-empty run of float32 values "
                               f"({len(raw)} bytes)", field=where)
        out = array("f")
        out.frombytes(raw)
        if sys.byteorder == "big":
            out.byteswap()
        return out
    return array("f", vec)


def _bytes(vec: array[float]) -> bytes:
    if sys.byteorder == "big":
        vec = array("f", vec)
        vec.byteswap()
    return vec.tobytes()


def _pg_text(vec: array[float], where: str) -> str:
    if not all(map(math.isfinite, vec)):
        raise InvalidInput(f"{where}: a vector must hold finite numbers only", field=where)
    return "[" + ",".join(format(x, ".9g") for x in vec) + "]"  # 9 digits: exact float32


# -- the embedding pipeline ---------------------------------------------------------------


class Pending(NamedTuple):
    """An entry waiting for a vector; ``version`` goes back to :func:`put_vectors`."""

    n: int
    namespace: str
    content: str
    version: int


def pending(tx: Tx, limit: int, namespaces: Sequence[str] | None = None) -> list[Pending]:
    """Entries waiting for a vector (of ``namespaces``, or any), oldest first. An entry
    embedded by another embedder waits only after :func:`requeue`."""
    if namespaces is None:
        rows = tx.all("SELECT n, namespace, content, version FROM memory_entries "
                      "WHERE embedded_with IS NULL ORDER BY n LIMIT ?", (limit,))
    else:
        names = _namespaces(namespaces)
        if not names:
            return []
        rows = tx.all("SELECT n, namespace, content, version FROM memory_entries WHERE "
                      f"embedded_with IS NULL AND namespace IN ({_marks(names)}) "
                      "ORDER BY n LIMIT ?", (*names, limit))
    return [Pending(int(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in rows]


def requeue(tx: Tx, embedder: str, dialect: str) -> int:
    """Mark every entry embedded by another embedder than ``embedder`` as pending
    (after a change of embedder); their old vectors go, with tombstones. How many."""
    _embedder(embedder)
    ns = [int(r[0]) for r in tx.all(
        "SELECT n FROM memory_entries WHERE embedded_with IS NOT NULL AND embedded_with <> ?",
        (embedder,))]
    drop_vectors(tx, ns, dialect, embedder=embedder)
    for part in _chunks(ns):
        tx.execute("UPDATE memory_entries SET embedded_with = NULL "
                   f"WHERE n IN ({_marks(part)})", part)
    return len(ns)


def put_vectors(tx: Tx, embedder: str, rows: Sequence[tuple[int, bytes, int]], dialect: str
                ) -> list[int]:
    """Store each ``(n, vector, version)``: the vector of the entry's content at that
    version. An entry that changed (another version) or vanished since it was read is
    skipped (a changed entry is pending again). Returns the keys written, each with a
    new stamp."""
    _embedder(embedder)
    expect = {int(n): int(version) for n, _vec, version in rows}
    wanted = {int(n): bytes(vec) for n, vec, _version in rows}
    dims = {len(vec) for vec in wanted.values()}
    for n, vec in wanted.items():
        _floats(vec, f"vectors[{n}]")
    if len(dims) > 1:
        raise InvalidInput("every vector of one call must have the same length",
                           field="vectors")
    keys = sorted(wanted)
    lock = " FOR UPDATE" if dialect == "postgresql" else ""  # SQLite: one writer
    current: dict[int, tuple[int, str]] = {}
    for part in _chunks(keys):
        current.update((int(r[0]), (int(r[1]), str(r[2]))) for r in tx.all(
            f"SELECT n, version, namespace FROM memory_entries WHERE n IN ({_marks(part)}) "
            f"ORDER BY n{lock}", part))
    keep = [n for n in keys if n in current and current[n][0] == expect[n]]
    if not keep:
        return []
    drop_vectors(tx, keep, dialect, embedder=embedder)  # another embedder's vectors
    stamps = _stamps(tx, len(keep))
    tx.executemany(
        "INSERT INTO memory_vectors (n, namespace, embedder, vec, stamp) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (n) DO UPDATE SET namespace = excluded.namespace, "
        "embedder = excluded.embedder, vec = excluded.vec, stamp = excluded.stamp",
        [(n, current[n][1], embedder, wanted[n], s) for n, s in zip(keep, stamps, strict=True)])
    tx.executemany("UPDATE memory_entries SET embedded_with = ? WHERE n = ?",
                   [(embedder, n) for n in keep])
    schema = _pgvector_schema(tx) if dialect == "postgresql" and _has_pgvec(tx) else None
    if schema is not None:
        tx.executemany(
            f"INSERT INTO memory_pgvec (n, namespace, embedder, embedding) "
            f"VALUES (?, ?, ?, ?::{schema}.vector) ON CONFLICT (n) DO UPDATE SET "
            "namespace = excluded.namespace, embedder = excluded.embedder, "
            "embedding = excluded.embedding",
            [(n, current[n][1], embedder, _pg_text(_floats(wanted[n], "vectors"), "vectors"))
             for n in keep])
    return keep


def vectors_since(tx: Tx, namespace: str, embedder: str, stamp: int, limit: int
                  ) -> list[tuple[int, bytes, int]]:
    """``(n, vector, stamp)`` of the namespace's vectors by ``embedder`` written after
    ``stamp``, in stamp order, at most ``limit``: page on with the last stamp."""
    rows = tx.all("SELECT n, vec, stamp FROM memory_vectors WHERE namespace = ? AND "
                  "embedder = ? AND stamp > ? ORDER BY stamp LIMIT ?",
                  (namespace, embedder, stamp, limit))
    return [(int(r[0]), bytes(r[1]), int(r[2])) for r in rows]


def tombstones_since(tx: Tx, namespace: str, stamp: int, until: int | None = None
                     ) -> list[tuple[int, int]]:
    """``(n, stamp)`` of the namespace's vectors removed after ``stamp`` (and at or
    before ``until``), in stamp order."""
    if until is None:
        rows = tx.all("SELECT n, stamp FROM memory_deleted WHERE namespace = ? AND stamp > ? "
                      "ORDER BY stamp", (namespace, stamp))
    else:
        rows = tx.all("SELECT n, stamp FROM memory_deleted WHERE namespace = ? AND stamp > ? "
                      "AND stamp <= ? ORDER BY stamp", (namespace, stamp, until))
    return [(int(r[0]), int(r[1])) for r in rows]


def count_vectors(tx: Tx, namespace: str, embedder: str) -> int:
    """How many vectors by ``embedder`` the namespace has: what an index caught up
    with the store must hold."""
    row = tx.one("SELECT COUNT(*) FROM memory_vectors WHERE namespace = ? AND embedder = ?",
                 (namespace, embedder))
    return int(row[0]) if row else 0


def max_stamp(tx: Tx) -> int:
    row = tx.one("SELECT stamp FROM memory_clock WHERE id = 1")
    return int(row[0]) if row else 0


# -- pgvector -----------------------------------------------------------------------------


def _pgvector_schema(tx: Tx) -> str | None:
    row = tx.one("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n "
                 "ON n.oid = e.extnamespace WHERE e.extname = 'vector'")
    return None if row is None else '"' + str(row[0]).replace('"', '""') + '"'


def _index_name(embedder: str, dim: int) -> str:
    return "memory_pgvec_hnsw_" + hashlib.sha256(f"{embedder}\n{dim}".encode()).hexdigest()[:16]


def ensure_pgvector(tx: Tx, embedder: str, dim: int) -> bool:
    """Make pgvector search ready for ``embedder``'s vectors of ``dim`` dimensions:
    the extension, ``memory_pgvec``, its HNSW index, and the vectors stored before
    (while it was off). False, having changed nothing, when the extension cannot be
    created or ``dim`` is over HNSW's limit (whether to use it at all is the caller's:
    the daemon's ``pgvector`` setting)."""
    _embedder(embedder)
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= _HNSW_MAX_DIM:
        log.warning("pgvector: %r dimensions is outside HNSW's 1-%d; using exact search",
                    dim, _HNSW_MAX_DIM)
        return False
    tx.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK,))
    schema = _pgvector_schema(tx)
    if schema is None:
        # The extension is database-wide: put it in the shared "public" schema when
        # there is one, not in the first of the search path, which may be one agentd
        # schema among several (dropping that schema would drop the type from under
        # every other one's vectors).
        public = tx.one("SELECT to_regnamespace('public') IS NOT NULL")
        where = " SCHEMA public" if public and public[0] else ""
        tx.execute("SAVEPOINT agentd_pgvector")
        try:
            tx.execute(f"CREATE EXTENSION IF NOT EXISTS vector{where}")
        except Exception as exc:  # the driver's error: not installed, not allowed
            tx.execute("ROLLBACK TO SAVEPOINT agentd_pgvector")
            log.info("pgvector is not available (%s); using exact search",
                     str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return False
        tx.execute("RELEASE SAVEPOINT agentd_pgvector")
        schema = _pgvector_schema(tx)
        assert schema is not None
    tx.execute(f"CREATE TABLE IF NOT EXISTS memory_pgvec ("
               "n BIGINT PRIMARY KEY REFERENCES memory_entries(n) ON DELETE CASCADE, "
               f"namespace TEXT NOT NULL, embedder TEXT NOT NULL, embedding {schema}.vector "
               "NOT NULL)")
    tx.execute("CREATE INDEX IF NOT EXISTS memory_pgvec_namespace ON memory_pgvec (namespace)")
    # Copy first, index after: one HNSW build is much faster than as many inserts.
    _backfill(tx, embedder, dim, schema)
    # One partial index per embedder and dimension: the cast needs a fixed dimension,
    # and a row of another embedder (another dimension) must never meet it.
    tx.execute(f"CREATE INDEX IF NOT EXISTS {_index_name(embedder, dim)} ON memory_pgvec "
               f"USING hnsw ((embedding::{schema}.vector({dim})) {schema}.vector_cosine_ops) "
               f"WHERE embedder = '{embedder}'")
    return True


def _backfill(tx: Tx, embedder: str, dim: int, schema: str) -> None:
    """Copy into ``memory_pgvec`` the vectors it lacks (stored while it did not exist)."""
    while True:
        rows = tx.all("SELECT v.n, v.namespace, v.vec FROM memory_vectors v "
                      "LEFT JOIN memory_pgvec p ON p.n = v.n AND p.embedder = v.embedder "
                      "WHERE v.embedder = ? AND p.n IS NULL ORDER BY v.n LIMIT 1000",
                      (embedder,))
        if not rows:
            return
        values = []
        for n, namespace, vec in rows:
            floats = _floats(bytes(vec), "vectors")
            if len(floats) != dim:
                raise InvalidInput(f"entry {n} has a {len(floats)}-dimension vector by "
                                   f"{embedder}, not {dim}", field="dim")
            values.append((int(n), str(namespace), embedder, _pg_text(floats, "vectors")))
        tx.executemany(f"INSERT INTO memory_pgvec (n, namespace, embedder, embedding) "
                       f"VALUES (?, ?, ?, ?::{schema}.vector)", values)
        log.info("pgvector: copied %d stored vectors", len(values))


class PgVector(NamedTuple):
    """pgvector as :func:`ensure_pgvector` set it up: the extension's schema (quoted)
    and whether it has iterative index scans (0.8 and later)."""

    schema: str
    iterative: bool


def pgvector_setup(tx: Tx) -> PgVector | None:
    """How pgvector is set up for this schema (None: not, or not ``memory_pgvec``)."""
    row = tx.one("SELECT n.nspname, e.extversion FROM pg_extension e JOIN pg_namespace n "
                 "ON n.oid = e.extnamespace WHERE e.extname = 'vector'")
    if row is None or not _has_pgvec(tx):
        return None
    version = tuple(int(p) for p in re.findall(r"\d+", str(row[1]))[:2])
    return PgVector('"' + str(row[0]).replace('"', '""') + '"', version >= (0, 8))


def vector_search(tx: Tx, namespaces: Sequence[str], embedder: str, dim: int,
                  query: bytes | Sequence[float], k: int, filters: EntryFilter | None,
                  exact_below: int = 0, setup: PgVector | None = None
                  ) -> list[tuple[int, float]]:
    """``(n, cosine similarity)`` of the ``k`` nearest entries by pgvector's HNSW
    index, best first; exactly (every vector of the namespaces compared) when they
    hold at most ``exact_below`` entries, as the local index does: an HNSW walk
    filtered to a few namespaces of a shared graph depends on what the other
    namespaces hold, and a small namespace is scanned in milliseconds.
    :func:`ensure_pgvector` must have returned True; ``setup``: what
    :func:`pgvector_setup` said (read here when not given).

    Two statements: the search's settings and the namespaces' size (their entries,
    from full text's statistics: counting their vectors took 6 ms at 100,000), then
    the search."""
    _embedder(embedder)
    if not 1 <= k <= MAX_PAGE:
        raise InvalidInput(f"k must be 1-{MAX_PAGE}", field="limit")
    vec = _floats(query, "query")
    if len(vec) != dim:
        raise InvalidInput(f"the query vector has {len(vec)} dimensions, not {dim}",
                           field="query")
    names = _namespaces(namespaces)
    if not names:
        return []
    if setup is None:
        setup = pgvector_setup(tx)
        if setup is None:
            raise RuntimeError("pgvector search is not set up (call ensure_pgvector first)")
    schema = setup.schema
    # Filters are checked on the index's candidates: let it look further than k, and
    # (pgvector 0.8+) keep scanning until k pass them.
    settings = ["set_config('hnsw.ef_search', ?, true)"]
    if setup.iterative:
        settings.append("set_config('hnsw.iterative_scan', 'relaxed_order', true)")
    size = tx.one(f"SELECT {', '.join(settings)}, (SELECT COALESCE(SUM(docs), 0) FROM "
                  f"memory_text_ns WHERE namespace IN ({_marks(names)}))",
                  (str(min(1000, max(64, 2 * k))), *names))
    assert size is not None
    terms = [f"p.namespace IN ({_marks(names)})"]
    params: list[object] = list(names)
    if filters is not None and not filters.empty:
        where, more = _where(names, filters, "postgresql")
        terms.append(f"p.n IN (SELECT e.n FROM memory_entries e WHERE {where})")
        params.extend(more)
    distance = (f"(p.embedding::{schema}.vector({dim})) OPERATOR({schema}.<=>) "
                f"(?::{schema}.vector({dim}))")
    text = _pg_text(vec, "query")
    if exact_below > 0 and int(size[-1]) <= exact_below:
        # MATERIALIZED: the distances of the namespaces' rows (found by the
        # namespace index), then sorted; never the HNSW index.
        rows = tx.all(
            f"WITH c AS MATERIALIZED (SELECT p.n, {distance} AS distance FROM "
            f"memory_pgvec p WHERE p.embedder = '{embedder}' AND {' AND '.join(terms)}) "
            "SELECT n, distance FROM c ORDER BY distance, n LIMIT ?",
            (text, *params, k))
        return [(int(r[0]), 1.0 - float(r[1])) for r in rows]
    # relaxed_order may return neighbours slightly out of order: sort them again.
    rows = tx.all(
        f"SELECT n, distance FROM (SELECT p.n, {distance} AS distance FROM memory_pgvec p "
        f"WHERE p.embedder = '{embedder}' AND {' AND '.join(terms)} "
        f"ORDER BY {distance} LIMIT ?) t ORDER BY distance, n",
        (text, *params, text, k))
    return [(int(r[0]), 1.0 - float(r[1])) for r in rows]
