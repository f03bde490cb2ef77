"""The in-process vector index of one memory namespace: exact below a size, HNSW above.

The store keeps every entry's vector; this index is a cache of them, so a lost or
stale index costs a rebuild, never data. Below ``ann_threshold`` vectors a search is an
exact scan: one matrix-vector product, p95 4 ms at 100k vectors of 384 dimensions on
this machine when it is quiet (30 ms when busy), and what a filtered search over a
small allowed set uses at any size. Above the threshold an hnswlib graph answers in
about a millisecond; it is built once, in the thread that crosses the threshold, then
kept up to date by every add and remove. Scores always come from the exact matrix (the
graph only picks candidates), so both paths score alike. hnswlib rather than usearch:
at 100k x 384 it built 2.5 times faster and answered 2 to 4 times faster at the same
recall (``bench/ann.py`` measures this index).

On disk an index is two files: ``path`` (a header with the format version, dimension,
count, watermark and a CRC32 of everything, then the keys and the matrix) and, once the
graph exists, ``<path>.<token>.ann`` written by hnswlib, named by ``path``'s header. A
save writes both under new names and renames ``path`` last, so a crash leaves the old
pair or the new one; :meth:`VectorIndex.load` returns None for anything it cannot trust.
"""

from __future__ import annotations

import logging
import os
import secrets
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FORMAT_VERSION", "AnnParams", "VectorIndex"]

log = logging.getLogger(__name__)

#: Bumped whenever the file layout changes; a file of another version loads as None.
FORMAT_VERSION = 1
_MAGIC = b"AGDVIDX\x00"
# magic, version, dim, count, watermark, ann_size, ann_crc, ann_name_len, body_crc
_HEADER = struct.Struct("<8sIIQqQIII")
_ANN_NAME_MAX = 255
_CHUNK = 1 << 24
_U64 = 0xFFFF_FFFF_FFFF_FFFF


@dataclass(frozen=True, kw_only=True)
class AnnParams:
    """HNSW parameters; the defaults reach recall@10 >= 0.97 at 100k (bench/ann.py).

    Attributes:
        m: Links per node (memory: about 8 * m bytes per vector beyond the vector).
        ef_construction: Candidate list while inserting; build time grows with it.
        ef_search: Candidate list while searching (at least k is used).
        oversample: A filtered search asks the graph for this many times the
            candidates it expects to need (k / the allowed share): the tail of a
            graph search is less exact than its head, and the allowed hits sit in it
            (10k clustered, half allowed, k=10: 128 candidates gave recall 0.94,
            320 gave 0.99).
        max_fetch: A filtered search that would need more candidates than this scans
            the allowed vectors exactly instead.
        threads: Threads for a bulk build (incremental adds use one).
    """

    m: int = 16
    ef_construction: int = 200
    ef_search: int = 128
    oversample: float = 16.0
    max_fetch: int = 4096
    threads: int = 2


class _RWLock:
    """Many readers or one writer; a waiting writer holds back new readers."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def _hnswlib() -> Any:
    # Imported on first use: a daemon whose namespaces stay small never loads it.
    import hnswlib  # type: ignore[import-untyped]

    return hnswlib


class _Graph:
    """An hnswlib index keyed by the entries' int64 keys (stored as uint64 labels).

    hnswlib never frees a slot: a removed label is only marked deleted. New labels
    reuse deleted slots (``replace_deleted``); a label that was removed and comes back
    is unmarked and updated in its old slot, unless that slot went to another label.
    Adding it with ``replace_deleted`` instead would give it a second slot, and hnswlib
    would drop it from its lookup when the first slot is reused.
    """

    def __init__(self, index: Any, deleted: set[int], threads: int) -> None:
        self.index = index
        self.deleted = deleted  # labels removed from the graph that it may still hold
        self.nthreads = threads

    def threads(self, batch: np.ndarray) -> int:
        # hnswlib splits a batch over threads; for a few vectors that costs more.
        return self.nthreads if int(batch.sum()) >= 64 else 1

    @classmethod
    def build(cls, dim: int, params: AnnParams, keys: np.ndarray, vectors: np.ndarray
              ) -> _Graph:
        index = _hnswlib().Index(space="ip", dim=dim)
        index.init_index(max_elements=max(len(keys), 1024), M=params.m,
                         ef_construction=params.ef_construction, allow_replace_deleted=True)
        index.set_ef(params.ef_search)
        if len(keys):
            index.add_items(vectors, keys.view(np.uint64), num_threads=params.threads)
        return cls(index, set(), params.threads)

    @classmethod
    def load(cls, path: Path, dim: int, params: AnnParams, deleted: set[int]) -> _Graph:
        index = _hnswlib().Index(space="ip", dim=dim)
        index.load_index(str(path), allow_replace_deleted=True)
        index.set_ef(params.ef_search)
        return cls(index, deleted, params.threads)

    def _reserve(self, extra: int) -> None:
        need = self.index.get_current_count() + extra
        capacity = self.index.get_max_elements()
        if need > capacity:
            self.index.resize_index(max(need, 2 * capacity))

    def upsert(self, keys: np.ndarray, vectors: np.ndarray, present: np.ndarray) -> None:
        """``present``: which keys are live in the graph now (the index knows)."""
        in_place = present.copy()
        for i in np.flatnonzero(~present).tolist():
            key = int(keys[i])
            if key in self.deleted:
                self.deleted.discard(key)
                try:
                    self.index.unmark_deleted(key & _U64)
                except RuntimeError:  # its slot went to another label: add it afresh
                    continue
                in_place[i] = True
        self._reserve(int((~in_place).sum()))
        if in_place.any():
            self.index.add_items(vectors[in_place], keys[in_place].view(np.uint64),
                                 num_threads=self.threads(in_place))
        if (~in_place).any():
            self.index.add_items(vectors[~in_place], keys[~in_place].view(np.uint64),
                                 num_threads=self.threads(~in_place), replace_deleted=True)

    def remove(self, keys: list[int]) -> None:
        for key in keys:
            self.index.mark_deleted(key & _U64)
        self.deleted.update(keys)

    def query(self, q: np.ndarray, k: int) -> np.ndarray:
        labels, _ = self.index.knn_query(q, k=k, num_threads=1)
        return np.asarray(labels[0], dtype=np.uint64).view(np.int64)


class VectorIndex:
    """The vectors of one namespace: exact search while small, HNSW above a threshold.

    Thread-safe: searches share a read lock, adds and removes take it alone. Every
    method is CPU-bound and synchronous; call it from a worker thread.

    Attributes:
        dim: The vectors' dimension.
        watermark: The latest store change applied, as the caller counts them; saved
            and loaded with the index so the caller knows what to replay.
    """

    def __init__(self, dim: int, *, ann_threshold: int = 20_000, path: Path | None = None,
                 ann_params: AnnParams | None = None) -> None:
        if dim < 1:
            raise ValueError(f"dim must be positive, not {dim}")
        if ann_threshold < 0:
            raise ValueError(f"ann_threshold must be >= 0, not {ann_threshold}")
        self.dim = dim
        self.watermark = 0
        self.ann_threshold = ann_threshold
        self.path = path
        self.params = ann_params or AnnParams()
        self._lock = _RWLock()
        self._mat = np.empty((16, dim), dtype=np.float32)
        self._keys = np.empty(16, dtype=np.int64)
        self._rows: dict[int, int] = {}
        self._n = 0
        self._graph: _Graph | None = None

    def __len__(self) -> int:
        return self._n

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    @property
    def approximate(self) -> bool:
        """Whether searches use the HNSW graph now (else they scan exactly)."""
        return self._graph is not None and self._n >= self.ann_threshold

    # -- writes ---------------------------------------------------------------------

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Insert or replace vectors by key (within a batch, the last of a key wins).

        Rows are L2-normalised here too, so a score is a cosine whatever the caller
        passed. May build the graph (seconds at the threshold) in the calling thread.
        """
        keys, vectors = self._check_batch(keys, vectors)
        if not len(keys):
            return
        with self._lock.write():
            rows = np.fromiter((self._rows.get(k, -1) for k in keys.tolist()), np.int64,
                               len(keys))
            present = rows >= 0
            self._mat[rows[present]] = vectors[present]
            fresh = ~present
            m = int(fresh.sum())
            if m:
                self._grow(self._n + m)
                start = self._n
                self._mat[start:start + m] = vectors[fresh]
                self._keys[start:start + m] = keys[fresh]
                self._rows.update(zip(keys[fresh].tolist(), range(start, start + m),
                                      strict=True))
                self._n += m
            if self._graph is not None:
                try:
                    self._graph.upsert(keys, vectors, present)
                except BaseException:
                    self._graph = None  # half-updated: built afresh by the next add
                    raise
            else:
                self._maybe_build()

    def remove(self, keys: Iterable[int]) -> None:
        """Drop keys (those not in the index are ignored): the last row fills the gap."""
        with self._lock.write():
            gone: list[int] = []
            for key in {int(k) for k in keys}:
                row = self._rows.pop(key, None)
                if row is None:
                    continue
                gone.append(key)
                last = self._n - 1
                if row != last:
                    moved = int(self._keys[last])
                    self._mat[row] = self._mat[last]
                    self._keys[row] = moved
                    self._rows[moved] = row
                self._n = last
            if self._graph is not None and gone:
                if self._n < self.ann_threshold // 2:
                    self._graph = None  # small again: stop paying for upkeep
                else:
                    self._graph.remove(gone)

    def _check_batch(self, keys: np.ndarray, vectors: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        keys = np.asarray(keys)
        vectors = np.asarray(vectors, dtype=np.float32)
        if keys.ndim != 1 or (len(keys) and not np.issubdtype(keys.dtype, np.integer)):
            raise ValueError("keys must be a one-dimensional integer array")
        keys = keys.astype(np.int64, copy=False)
        if vectors.shape != (len(keys), self.dim):
            raise ValueError(f"vectors must have shape ({len(keys)}, {self.dim}), "
                             f"not {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise ValueError("vectors must be finite")
        _, first_of_reversed = np.unique(keys[::-1], return_index=True)
        if len(first_of_reversed) != len(keys):
            last = np.sort(len(keys) - 1 - first_of_reversed)
            keys, vectors = keys[last], vectors[last]
        return keys, _normalised(vectors)

    def _grow(self, need: int) -> None:
        capacity = len(self._keys)
        if need <= capacity:
            return
        while capacity < need:
            capacity *= 2
        mat = np.empty((capacity, self.dim), dtype=np.float32)
        mat[:self._n] = self._mat[:self._n]
        keys = np.empty(capacity, dtype=np.int64)
        keys[:self._n] = self._keys[:self._n]
        self._mat, self._keys = mat, keys

    def _maybe_build(self) -> None:
        if self._graph is None and self._n >= max(self.ann_threshold, 1):
            log.info("building the HNSW graph of %d vectors (dim %d)", self._n, self.dim)
            self._graph = _Graph.build(self.dim, self.params, self._keys[:self._n],
                                       self._mat[:self._n])

    # -- search ---------------------------------------------------------------------

    def search(self, query: np.ndarray, k: int, *, allow: np.ndarray | None = None
               ) -> list[tuple[int, float]]:
        """The ``k`` nearest keys by cosine, best first, as ``(key, score)``.

        Args:
            query: One vector of ``dim`` floats (normalised here).
            k: At most this many results.
            allow: Keys the results must be among (the caller's filters); a small
                allowed set is scanned exactly, a large one goes through the graph
                with oversampling, and exactly again if too few candidates pass.
        """
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape != (self.dim,) or not np.isfinite(q).all():
            raise ValueError(f"query must be {self.dim} finite floats")
        q = _normalised(q[None, :])[0]
        with self._lock.read():
            n = self._n
            k = min(k, n)
            if k <= 0:
                return []
            if allow is None:
                if self.approximate:
                    found = self._graph_search(q, k, None, n)
                    if found is not None:
                        return found
                return self._top(None, q, k)
            rows = self._allowed_rows(np.asarray(allow, dtype=np.int64).reshape(-1), n)
            k = min(k, len(rows))
            if k <= 0:
                return []
            # The graph walks ef_search candidates anyway: asking for them all is free.
            fetch = max(int(np.ceil(k * n / len(rows) * self.params.oversample)),
                        self.params.ef_search)
            if (self.approximate and len(rows) > self.ann_threshold
                    and fetch <= self.params.max_fetch):
                found = self._graph_search(q, k, rows, min(fetch, n))
                if found is not None:
                    return found
            return self._top(rows, q, k)

    def _allowed_rows(self, allow: np.ndarray, n: int) -> np.ndarray:
        """Row numbers of the allowed keys that are in the index, in ascending order."""
        if len(allow) * 8 < n:
            rows = [self._rows.get(k, -1) for k in allow.tolist()]
            found = np.unique(np.asarray(rows, dtype=np.int64))
            return found[found >= 0]
        return np.flatnonzero(np.isin(self._keys[:n], allow))

    def _top(self, rows: np.ndarray | None, q: np.ndarray, k: int
             ) -> list[tuple[int, float]]:
        """Exact scan over ``rows`` (None: all of them)."""
        n = self._n
        if rows is None or len(rows) == n:
            rows, scores = None, self._mat[:n] @ q
        elif len(rows) * 4 > n:  # gathering most rows would copy most of the matrix
            scores = (self._mat[:n] @ q)[rows]
        else:
            scores = self._mat[rows] @ q
        pick = (np.argpartition(-scores, k - 1)[:k] if k < len(scores)
                else np.arange(len(scores)))
        # Ties go to the lower row so that the same data gives the same order.
        pick = pick[np.lexsort((pick, -scores[pick]))]
        keys = self._keys[pick if rows is None else rows[pick]]
        return list(zip(keys.tolist(), scores[pick].tolist(), strict=True))

    def _graph_search(self, q: np.ndarray, k: int, rows: np.ndarray | None, fetch: int
                      ) -> list[tuple[int, float]] | None:
        """Candidates from the graph scored exactly, or None to scan instead."""
        assert self._graph is not None
        try:
            labels = self._graph.query(q, max(k, fetch) if rows is not None else k)
        except RuntimeError:  # hnswlib found fewer than asked (many deletions)
            return None
        cand = np.fromiter((self._rows.get(x, -1) for x in labels.tolist()), np.int64,
                           len(labels))
        cand = cand[cand >= 0]
        if rows is not None:
            cand = cand[np.isin(cand, rows, assume_unique=True)]
            if len(cand) < k:
                return None
        scores = self._mat[cand] @ q
        order = np.lexsort((cand, -scores))[:k]
        return list(zip(self._keys[cand[order]].tolist(), scores[order].tolist(),
                        strict=True))

    # -- persistence ------------------------------------------------------------------

    def save(self) -> None:
        """Write the index to ``path`` atomically (temp files, fsync, rename)."""
        if self.path is None:
            raise ValueError("this index has no path to save to")
        path = self.path
        with self._lock.read():
            n = self._n
            ann_name = b""
            ann_size = ann_crc = 0
            if self._graph is not None:
                ann = path.with_name(f"{path.name}.{secrets.token_hex(6)}.ann")
                self._graph.index.save_index(str(ann))
                _fsync_path(ann)
                ann_size, ann_crc = _file_crc(ann)
                ann_name = ann.name.encode()
                deleted = np.asarray(sorted(self._graph.deleted), dtype=np.int64)
            else:
                deleted = np.empty(0, dtype=np.int64)
            parts: list[bytes | memoryview] = [
                self._keys[:n].data, self._mat[:n].data, struct.pack("<Q", len(deleted)),
                deleted.tobytes(), ann_name]
            body_crc = 0
            for part in parts:
                body_crc = zlib.crc32(part, body_crc)
            header = _HEADER.pack(_MAGIC, FORMAT_VERSION, self.dim, n, self.watermark,
                                  ann_size, ann_crc, len(ann_name), body_crc)
            tmp = path.with_name(f"{path.name}.{secrets.token_hex(6)}.tmp")
            try:
                with open(tmp, "wb") as f:
                    f.write(header)
                    for part in parts:
                        f.write(part)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                with suppress(OSError):
                    tmp.unlink()
                if ann_name:
                    with suppress(OSError):
                        path.with_name(ann_name.decode()).unlink()
                raise
        _fsync_path(path.parent)
        keep = ann_name.decode()
        for old in path.parent.glob(f"{path.name}.*.ann"):
            if old.name != keep:
                with suppress(OSError):
                    old.unlink()

    @classmethod
    def load(cls, path: Path, dim: int, **kw: Any) -> VectorIndex | None:
        """The index saved at ``path``, or None when it is missing or not to be trusted.

        None for a missing, truncated or corrupt file, another dimension or another
        format version: the caller rebuilds from the store. Never raises for a bad file.
        """
        try:
            return cls._load(path, dim, **kw)
        except (OSError, ValueError, RuntimeError, struct.error, MemoryError) as exc:
            log.warning("vector index %s not loaded (%s): rebuilding", path, exc)
            return None

    @classmethod
    def _load(cls, path: Path, dim: int, **kw: Any) -> VectorIndex | None:
        if not path.exists():
            return None
        with open(path, "rb") as f:
            raw = f.read(_HEADER.size)
            if len(raw) != _HEADER.size:
                raise ValueError("truncated header")
            (magic, version, fdim, n, watermark, ann_size, ann_crc, name_len,
             body_crc) = _HEADER.unpack(raw)
            if magic != _MAGIC or version != FORMAT_VERSION:
                raise ValueError(f"not a version {FORMAT_VERSION} vector index")
            if fdim != dim:
                raise ValueError(f"dimension {fdim}, expected {dim}")
            if name_len > _ANN_NAME_MAX:
                raise ValueError("bad header")
            size = path.stat().st_size
            fixed = _HEADER.size + n * 8 + n * dim * 4 + 8
            if size < fixed:
                raise ValueError("truncated")
            index = cls(dim, path=path, **kw)
            index._grow(max(n, 1))
            crc = 0
            crc = _read_into(f, index._keys[:n].view(np.uint8), crc)
            crc = _read_into(f, index._mat[:n].reshape(-1).view(np.uint8), crc)
            count_raw = f.read(8)
            crc = zlib.crc32(count_raw, crc)
            (n_deleted,) = struct.unpack("<Q", count_raw)
            if size != fixed + n_deleted * 8 + name_len:
                raise ValueError("truncated or trailing bytes")
            deleted = np.frombuffer(f.read(n_deleted * 8), dtype=np.int64)
            crc = zlib.crc32(deleted.tobytes(), crc)
            ann_name = f.read(name_len)
            crc = zlib.crc32(ann_name, crc)
            if crc != body_crc:
                raise ValueError("checksum mismatch")
        index._n = n
        index.watermark = watermark
        index._rows = dict(zip(index._keys[:n].tolist(), range(n), strict=True))
        if len(index._rows) != n:
            raise ValueError("duplicate keys")
        if ann_name:
            # The vectors are sound; a bad graph file only costs building it again.
            try:
                ann = path.with_name(ann_name.decode())
                if _file_crc(ann) != (ann_size, ann_crc):
                    raise ValueError("checksum mismatch")
                index._graph = _Graph.load(ann, dim, index.params, set(deleted.tolist()))
            except (OSError, ValueError, RuntimeError) as exc:
                log.warning("HNSW graph of %s not loaded (%s): building it again", path, exc)
        index._maybe_build()
        return index


def _normalised(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)


def _read_into(f: Any, buf: np.ndarray, crc: int) -> int:
    view = buf.data
    done = 0
    while done < len(view):
        got = f.readinto(view[done:done + _CHUNK])
        if not got:
            raise ValueError("truncated")
        crc = zlib.crc32(view[done:done + got], crc)
        done += got
    return crc


def _file_crc(path: Path) -> tuple[int, int]:
    crc = size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
    return size, crc


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
