"""Full-text search of memory entries on SQLite (FTS5), with bounded work.

Ranking every entry that matches any word of a query costs time in proportion to the
matches (and FTS5's BM25 reads the whole doclist of every phrase in the query for its
IDF): at a million entries a common word ("since", "work") matches a hundred thousand
of them, and one search took most of a second. So the search takes one of two ways:

- **Small namespaces** (up to :data:`SMALL` entries, most agents): the namespace is
  part of the FTS query (``fts_ns``, a column holding one token per namespace, a
  generated column of ``memory_entries``, migration 9), so FTS5 intersects it with
  the words itself, no join per match, and every word counts: exact BM25.
- **Large namespaces**: at most :data:`BUDGET` matches are ranked. The query's words
  are taken rarest first (each one's matches counted up to the budget, which is cheap:
  FTS5 stops reading at the LIMIT) while their matches add up to no more than the
  budget; a commoner word adds little to BM25 (its IDF is low) and is left out of the
  ranking. When every word is that common, the newest ``BUDGET`` entries holding all
  of them are ranked, then those holding any. The ranked entries are then kept to the
  namespaces and filters by a join. Should that leave too few (a large namespace
  among larger ones), the exact way is taken after all.

The vector side carries meaning (hybrid search weighs it 0.95 by default); this side
is for the exact words, where rare words are what tell entries apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentd.store.engine import Tx

__all__ = ["BUDGET", "SMALL", "namespace_token", "search"]

#: The most matches one search ranks in a large namespace.
BUDGET = 5000
#: Namespaces (together) of at most this many entries are searched exactly.
SMALL = 20_000


def namespace_token(namespace: str) -> str:
    """The namespace's token in the FTS index (what ``fts_ns`` holds for it)."""
    return "n" + namespace.encode().hex()


def _any(words: Sequence[str], op: str = "OR") -> str:
    # Words are \w+ (no '"'); tokens are hex: quoting keeps them out of query syntax.
    return "(" + f" {op} ".join(f'"{w}"' for w in words) + ")"


def search(tx: Tx, names: Sequence[str], terms: Sequence[str], where: str,
           params: Sequence[Any], filtered: bool, limit: int) -> list[tuple[int, float]]:
    """``(n, -bm25)`` of the best entries of ``names`` matching ``terms``, best first.

    ``where`` and ``params``: SQL conditions on ``memory_entries e`` (the namespaces
    and any filters); ``filtered``: whether there are filters beyond the namespaces.
    """
    scope = "fts_ns : " + _any([namespace_token(n) for n in names])
    if _size(tx, names) <= SMALL:
        return _ranked(tx, f"{scope} AND content : {_any(terms)}",
                       (where, params) if filtered else None, limit)
    counts = {t: _count(tx, t) for t in terms}
    present = sorted((t for t in terms if counts[t]), key=lambda t: counts[t])
    if not present:
        return []
    chosen: list[str] = []
    total = 0
    for term in present:
        if total + counts[term] > BUDGET:
            break
        chosen.append(term)
        total += counts[term]
    rows: list[tuple[int, float]] = []
    if chosen:
        rows = _ranked(tx, f"content : {_any(chosen)}", (where, params), limit, ahead=True)
        if len(rows) >= limit:
            return rows
    # Words too common to rank all their matches: the newest matches are ranked.
    seen = {n for n, _ in rows}
    for op in (("AND", "OR") if len(present) > 1 else ("OR",)):
        match = f"content : {_any(present, op)}"
        floor = _nth_newest(tx, match, BUDGET)
        for n, score in _ranked(tx, match, (where, params), limit, floor, ahead=True):
            if n not in seen:
                seen.add(n)
                rows.append((n, score))
        if len(rows) >= limit:
            return rows[:limit]
    # Too few of these namespaces' entries among the matches ranked: the exact way.
    return _ranked(tx, f"{scope} AND content : {_any(terms)}",
                   (where, params) if filtered else None, limit)


def _size(tx: Tx, names: Sequence[str]) -> int:
    """Entries in the namespaces, counted up to just past :data:`SMALL`."""
    marks = ", ".join("?" for _ in names)
    row = tx.one(f"SELECT COUNT(*) FROM (SELECT 1 FROM memory_entries "
                 f"WHERE namespace IN ({marks}) LIMIT ?)", (*names, SMALL + 1))
    return int(row[0]) if row else 0


def _count(tx: Tx, term: str) -> int:
    """Entries (of any namespace) holding ``term``, counted up to just past the budget."""
    row = tx.one("SELECT COUNT(*) FROM (SELECT rowid FROM memory_fts WHERE memory_fts "
                 "MATCH ? LIMIT ?)", (f'content : "{term}"', BUDGET + 1))
    return int(row[0]) if row else 0


def _nth_newest(tx: Tx, match: str, n: int) -> int | None:
    """The rowid of the ``n``-th newest entry matching (None: fewer match)."""
    row = tx.one("SELECT rowid FROM memory_fts WHERE memory_fts MATCH ? "
                 "ORDER BY rowid DESC LIMIT 1 OFFSET ?", (match, n - 1))
    return None if row is None else int(row[0])


def _ranked(tx: Tx, match: str, join: tuple[str, Sequence[Any]] | None, limit: int,
            floor: int | None = None, *, ahead: bool = False) -> list[tuple[int, float]]:
    """The best ``limit`` matches; with ``join``, those passing its conditions (ranked
    ``ahead`` of the join: at most :data:`BUDGET` matches, then joined)."""
    params: list[Any] = [match]
    window = ""
    if floor is not None:
        window = " AND memory_fts.rowid >= ?"
        params.append(floor)
    # The namespace column weighs nothing: the score is the content's BM25.
    ranked = (f"SELECT memory_fts.rowid AS n, -bm25(memory_fts, 1.0, 0.0) AS score "
              f"FROM memory_fts WHERE memory_fts MATCH ?{window}")
    if join is None:
        sql = f"{ranked} ORDER BY score DESC, n DESC LIMIT ?"
    elif ahead:
        sql = (f"SELECT f.n, f.score FROM ({ranked} ORDER BY score DESC LIMIT {BUDGET}) f "
               f"JOIN memory_entries e ON e.n = f.n WHERE {join[0]} "
               "ORDER BY f.score DESC, f.n DESC LIMIT ?")
        params.extend(join[1])
    else:
        sql = (f"SELECT f.n, f.score FROM ({ranked}) f JOIN memory_entries e "
               f"ON e.n = f.n WHERE {join[0]} ORDER BY f.score DESC, f.n DESC LIMIT ?")
        params.extend(join[1])
    return [(int(r[0]), float(r[1])) for r in tx.all(sql, (*params, limit))]
