"""The words of memory entries, each namespace's statistics of them, and BM25.

Both stores rank full text the same way, from the same words (docs/design-notes.md,
"Memory on LoCoMo"): an entry's **terms** are its words (letters and digits, case
folded, accents removed), without English stop words, each stemmed by Snowball's
English stemmer (PostgreSQL's ``english`` configuration uses the same one), cut to
:data:`MAX_TERM` characters. Its **length** is how many terms it has.

**BM25** (Okapi, ``k1`` 1.2, ``b`` 0.75, IDF ``ln(1 + (N - df + 0.5) / (df + 0.5))``)
is computed with the statistics of the searched namespaces alone: ``N`` their
entries, ``df`` their entries holding the term, the average length theirs. So what
one agent (or tenant) stores never moves another's scores, and a ranking does not
depend on what else is in the database. The statistics are kept in the transaction
of every write (``memory_text_ns``: entries and terms per namespace;
``memory_text_df``: entries per namespace and term), so a search reads them in a
few lookups. Filters choose among the namespaces' entries; they do not change the
statistics (an entry scores the same whatever else a filter keeps).

A term's entries are its **postings** (``memory_postings``, a row per namespace, term
and entry, with the term's count in the entry and the entry's length), read by their
primary key: a search reads the postings of its terms in its namespaces and nothing
else, on both stores. Each entry keeps its distinct terms (``text_terms``) so that
removing it takes away exactly what adding it counted, whatever version of the
stemmer wrote it.
"""

from __future__ import annotations

import math
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agentd.store.engine import Tx

__all__ = ["K1", "MAX_TERM", "MAX_TF", "STOPWORDS", "B", "Stats", "TextRow", "drop_all",
           "index", "index_existing", "query_terms", "read_stats",
           "stored", "terms", "unindex"]

#: Terms longer than this are cut (a pasted hash or blob is not a word to rank by).
MAX_TERM = 64
#: A term counts at most this many times in an entry (BM25 saturates long before).
MAX_TF = 256
#: BM25's parameters (FTS5's defaults).
K1, B = 1.2, 0.75

#: Words too common to tell entries apart: Snowball's English list (PostgreSQL's
#: ``english.stop``) and "could", "would".
STOPWORDS = frozenset({
    "a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any",
    "are", "as", "at", "be", "because", "been", "before", "being", "below", "between",
    "both", "but", "by", "can", "could", "did", "do", "does", "doing", "don", "down",
    "during", "each", "few", "for", "from", "further", "had", "has", "have", "having",
    "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if",
    "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my",
    "myself", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or",
    "other", "our", "ours", "ourselves", "out", "over", "own", "s", "same", "she",
    "should", "so", "some", "such", "t", "than", "that", "the", "their", "theirs",
    "them", "themselves", "then", "there", "these", "they", "this", "those", "through",
    "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when",
    "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you",
    "your", "yours", "yourself", "yourselves",
})

_WORD = re.compile(r"[^\W_]+")


_local = threading.local()


def _stem(words: list[str]) -> list[str]:
    # A stemmer keeps its state while it works (the pure-Python one in attributes a
    # thread switch may interleave): one per thread. snowballstemmer uses PyStemmer's
    # C implementation when it is installed (the same algorithm, ten times faster).
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        import snowballstemmer  # type: ignore[import-untyped]

        stemmer = _local.stemmer = snowballstemmer.stemmer("english")
    stems: list[str] = stemmer.stemWords(words)
    return [s[:MAX_TERM] for s in stems if s]


def _words(text: str) -> list[str]:
    folded = text.casefold()
    if not folded.isascii():
        folded = "".join(ch for ch in unicodedata.normalize("NFKD", folded)
                         if not unicodedata.combining(ch))
    return [w for w in _WORD.findall(folded) if w not in STOPWORDS]


def terms(text: str) -> list[str]:
    """The terms of ``text``, in order, repeats kept."""
    words = _words(text)
    return _stem(words) if words else []


def query_terms(text: str, most: int) -> list[str]:
    """The distinct terms of a query, in order, at most ``most`` (of its first ``most``
    distinct words: a pasted document is not a query)."""
    words = list(dict.fromkeys(_words(text)))[:most]
    return list(dict.fromkeys(_stem(words))) if words else []


@dataclass(frozen=True, slots=True)
class TextRow:
    """An entry's terms as the stores keep them: each term's count, and the length."""

    n: int
    namespace: str
    tf: Mapping[str, int]
    length: int

    @classmethod
    def of(cls, n: int, namespace: str, content: str) -> TextRow:
        found = terms(content)
        return cls(n, namespace, {t: min(c, MAX_TF) for t, c in Counter(found).items()},
                   len(found))

    def columns(self) -> tuple[str, int]:
        """The entry's ``text_terms`` (its distinct terms, space-separated) and
        ``text_len``."""
        return " ".join(self.tf), self.length


# -- the statistics -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stats:
    """The searched namespaces' statistics for the terms of a query."""

    #: Each namespace's key in the text tables (namespaces with no entry have none).
    ids: tuple[int, ...]
    docs: int
    tokens: int
    df: Mapping[str, int]

    @property
    def avgdl(self) -> float:
        return max(self.tokens / self.docs, 1.0) if self.docs else 1.0

    def idf(self, term: str) -> float:
        df = self.df.get(term, 0)
        return math.log(1.0 + (self.docs - df + 0.5) / (df + 0.5))


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" for _ in values)


def read_stats(tx: Tx, names: Sequence[str], query: Sequence[str]) -> Stats:
    """The statistics of ``names`` (together) for the terms ``query``: one statement."""
    found: dict[int, tuple[int, int]] = {}
    df: dict[str, int] = {}
    rows = tx.all(
        "SELECT n.id, n.docs, n.tokens, d.term, d.docs FROM memory_text_ns n "
        "LEFT JOIN memory_text_df d ON d.ns = n.id AND d.term IN "
        f"({_marks(query) if query else 'NULL'}) WHERE n.namespace IN ({_marks(names)})",
        (*query, *names))
    for ns, docs, tokens, term, count in rows:
        found[int(ns)] = (int(docs), int(tokens))
        if term is not None and int(count) > 0:
            df[str(term)] = df.get(str(term), 0) + int(count)
    return Stats(tuple(sorted(found)), sum(d for d, _ in found.values()),
                 sum(t for _, t in found.values()), df)


# -- keeping them: every write of an entry's content --------------------------------------


def index(tx: Tx, rows: Sequence[TextRow]) -> None:
    """Count entries just written (their ``text_terms`` and ``text_len`` already set)
    into their namespaces' statistics, and add their postings."""
    _count(tx, rows, +1)


def unindex(tx: Tx, rows: Sequence[TextRow]) -> None:
    """Take entries about to be removed (or rewritten) out of the statistics and the
    postings."""
    _count(tx, rows, -1)


def _count(tx: Tx, rows: Sequence[TextRow], sign: int) -> None:
    if not rows:
        return
    per_ns: dict[str, list[TextRow]] = {}
    for text in rows:
        per_ns.setdefault(text.namespace, []).append(text)
    # In one order (namespace, then term) on every write: concurrent writers to a
    # namespace on PostgreSQL wait for each other's rows instead of deadlocking.
    ids: dict[str, int] = {}
    for namespace in sorted(per_ns):
        mine = per_ns[namespace]
        row = tx.one("INSERT INTO memory_text_ns (namespace, docs, tokens) VALUES (?, ?, ?) "
                     "ON CONFLICT (namespace) DO UPDATE SET "
                     "docs = memory_text_ns.docs + excluded.docs, "
                     "tokens = memory_text_ns.tokens + excluded.tokens RETURNING id",
                     (namespace, sign * len(mine), sign * sum(r.length for r in mine)))
        assert row is not None
        ids[namespace] = int(row[0])
    df: Counter[tuple[int, str]] = Counter()
    for namespace, mine in per_ns.items():
        for r in mine:
            df.update((ids[namespace], t) for t in r.tf)
    keys = sorted(df)
    postings = sorted((ids[r.namespace], t, r.n, c, r.length)
                      for r in rows for t, c in r.tf.items())
    if sign > 0:
        tx.executemany("INSERT INTO memory_text_df (ns, term, docs) VALUES (?, ?, ?) "
                       "ON CONFLICT (ns, term) DO UPDATE SET "
                       "docs = memory_text_df.docs + excluded.docs",
                       [(ns, t, df[(ns, t)]) for ns, t in keys])
        tx.executemany("INSERT INTO memory_postings (ns, term, n, tf, len) "
                       "VALUES (?, ?, ?, ?, ?)", postings)
    else:
        tx.executemany("UPDATE memory_text_df SET docs = docs - ? WHERE ns = ? AND term = ?",
                       [(df[(ns, t)], ns, t) for ns, t in keys])
        tx.executemany("DELETE FROM memory_text_df WHERE ns = ? AND term = ? AND docs <= 0",
                       keys)
        tx.executemany("DELETE FROM memory_postings WHERE ns = ? AND term = ? AND n = ?",
                       [p[:3] for p in postings])


def drop_all(tx: Tx, namespace: str) -> None:
    """The namespace is emptied: its statistics and postings go. Its row goes first:
    on PostgreSQL that waits for a write to the namespace under way, whose postings
    then go too (a write after it counts into a new row)."""
    row = tx.one("DELETE FROM memory_text_ns WHERE namespace = ? RETURNING id", (namespace,))
    if row is None:
        return
    ns = int(row[0])
    tx.execute("DELETE FROM memory_postings WHERE ns = ?", (ns,))
    tx.execute("DELETE FROM memory_text_df WHERE ns = ?", (ns,))


def stored(tx: Tx, keys: Sequence[int], *, lock: bool = False) -> list[TextRow]:
    """The entries' terms as stored (what :func:`unindex` takes away; each term's
    count is not kept with the entry and is not needed for that). ``lock``: lock the
    rows first (an update that changes nothing, so both stores take it), and read
    them as they are once any write to them under way committed."""
    out: list[TextRow] = []
    wanted = sorted(set(keys))
    for start in range(0, len(wanted), 500):
        part = wanted[start:start + 500]
        sql = (f"UPDATE memory_entries SET version = version WHERE n IN ({_marks(part)}) "
               "RETURNING n, namespace, text_terms, text_len" if lock else
               f"SELECT n, namespace, text_terms, text_len FROM memory_entries "
               f"WHERE n IN ({_marks(part)})")
        for n, namespace, found, length in tx.all(sql, part):
            if length is None:
                continue
            out.append(TextRow(int(n), str(namespace), dict.fromkeys(str(found).split(), 1),
                               int(length)))
    return out


def index_existing(tx: Tx, batch: int = 1000) -> int:
    """Index the entries written before the terms were kept (migration 28): their
    terms, their length, their postings and their namespaces' statistics. How many."""
    done = 0
    last = -1
    while True:
        rows = tx.all("SELECT n, namespace, content FROM memory_entries WHERE n > ? "
                      "AND text_len IS NULL ORDER BY n LIMIT ?", (last, batch))
        if not rows:
            return done
        found = [TextRow.of(int(n), str(ns), str(content)) for n, ns, content in rows]
        tx.executemany("UPDATE memory_entries SET text_terms = ?, text_len = ? WHERE n = ?",
                       [(*r.columns(), r.n) for r in found])
        index(tx, found)
        done += len(found)
        last = found[-1].n
