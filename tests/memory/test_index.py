"""The vector index of a memory namespace: exact and HNSW search, upkeep, files, threads."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from agentd.memory.index import AnnParams, VectorIndex

DIM = 16


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered(rng: np.random.Generator, n: int, centres: int = 20) -> np.ndarray:
    c = rng.standard_normal((centres, DIM))
    return unit(c[rng.integers(0, centres, n)] + 0.3 * rng.standard_normal((n, DIM)))


def brute(keys: np.ndarray, vecs: np.ndarray, q: np.ndarray, k: int) -> list[int]:
    scores = unit(vecs) @ unit(q)
    return [int(keys[i]) for i in np.argsort(-scores, kind="stable")[:k]]


def recall(ix: VectorIndex, keys: np.ndarray, vecs: np.ndarray, queries: np.ndarray,
           k: int = 10) -> float:
    hits = [len({key for key, _ in ix.search(q, k)} & set(brute(keys, vecs, q, k)))
            for q in queries]
    return sum(hits) / (k * len(queries))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_exact_search_matches_brute_force(rng: np.random.Generator) -> None:
    keys = rng.permutation(10_000)[:300].astype(np.int64) - 50  # negative keys too
    vecs = rng.standard_normal((300, DIM)).astype(np.float32)
    ix = VectorIndex(DIM)
    ix.add(keys, vecs * 3)  # not normalised: the index normalises
    assert len(ix) == 300 and int(keys[0]) in ix and 10**9 not in ix
    assert not ix.approximate
    for q in rng.standard_normal((20, DIM)):
        got = ix.search(q, 7)
        assert [k for k, _ in got] == brute(keys, vecs, q, 7)
        want = unit(vecs) @ unit(q)
        for key, score in got:
            assert score == pytest.approx(float(want[list(keys).index(key)]), abs=1e-5)
    assert len(ix.search(rng.standard_normal(DIM), 1000)) == 300
    assert ix.search(rng.standard_normal(DIM), 0) == []
    assert VectorIndex(DIM).search(rng.standard_normal(DIM), 5) == []


def test_bad_input_is_refused(rng: np.random.Generator) -> None:
    ix = VectorIndex(DIM)
    with pytest.raises(ValueError, match="shape"):
        ix.add(np.arange(3), rng.standard_normal((3, DIM + 1)))
    with pytest.raises(ValueError, match="finite"):
        ix.add(np.arange(1), np.full((1, DIM), np.nan))
    with pytest.raises(ValueError, match="integer"):
        ix.add(np.array([0.5]), rng.standard_normal((1, DIM)))
    with pytest.raises(ValueError, match="query"):
        ix.search(rng.standard_normal(DIM - 1), 3)
    assert len(ix) == 0


def test_upsert_replaces_and_last_in_a_batch_wins(rng: np.random.Generator) -> None:
    ix = VectorIndex(DIM)
    vecs = rng.standard_normal((50, DIM)).astype(np.float32)
    ix.add(np.arange(50), vecs)
    target = unit(rng.standard_normal(DIM))
    ix.add(np.array([3, 4, 3]), np.stack([-target, rng.standard_normal(DIM), target]))
    assert len(ix) == 50
    (key, score), *_ = ix.search(target, 3)
    assert key == 3 and score == pytest.approx(1.0, abs=1e-5)


def test_remove_swaps_with_last_and_ignores_missing(rng: np.random.Generator) -> None:
    keys = np.arange(100, dtype=np.int64)
    vecs = rng.standard_normal((100, DIM)).astype(np.float32)
    ix = VectorIndex(DIM)
    ix.add(keys, vecs)
    gone = [0, 50, 99, 12345]
    ix.remove(gone)
    left = np.setdiff1d(keys, gone)
    assert len(ix) == 97 and 50 not in ix and 98 in ix
    for q in rng.standard_normal((10, DIM)):
        assert [k for k, _ in ix.search(q, 10)] == brute(left, vecs[left], q, 10)
    ix.add(np.array([50]), vecs[50:51])  # back again
    assert [k for k, _ in ix.search(vecs[50], 1)] == [50]


def test_allow_filter_exact_and_through_the_graph(rng: np.random.Generator) -> None:
    n = 1500
    keys = np.arange(n, dtype=np.int64) * 3
    vecs = clustered(rng, n)
    ix = VectorIndex(DIM, ann_threshold=200, ann_params=AnnParams(ef_search=64))
    ix.add(keys, vecs)
    assert ix.approximate
    small = rng.choice(keys, 30, replace=False)  # scanned exactly
    large = rng.choice(keys, 1200, replace=False)  # through the graph, post-filtered
    for allow in (small, large, np.concatenate([small, [-1, 10**9]])):
        members = np.isin(keys, allow)
        for q in clustered(rng, 5):
            got = [k for k, _ in ix.search(q, 10, allow=allow)]
            assert set(got) <= set(allow.tolist())
            want = brute(keys[members], vecs[members], q, 10)
            assert len(set(got) & set(want)) >= 9
    assert ix.search(vecs[0], 5, allow=np.array([], dtype=np.int64)) == []
    assert ix.search(vecs[0], 5, allow=np.array([-7])) == []
    assert [k for k, _ in ix.search(vecs[0], 5, allow=keys[:2])] in ([0, 3], [3, 0])


def test_crossing_the_threshold_builds_the_graph_with_high_recall(
        rng: np.random.Generator) -> None:
    keys = np.arange(600, dtype=np.int64)
    vecs = clustered(rng, 600)
    ix = VectorIndex(DIM, ann_threshold=400)
    ix.add(keys[:399], vecs[:399])
    assert not ix.approximate
    ix.add(keys[399:], vecs[399:])
    assert ix.approximate
    queries = clustered(rng, 40)
    assert recall(ix, keys, vecs, queries) >= 0.97
    # upkeep: removals and re-additions go into the graph too
    ix.remove(range(0, 300, 2))
    ix.add(keys[:100:2], vecs[:100:2])
    live = np.concatenate([keys[1:300:2], keys[300:], keys[:100:2]])
    assert ix.approximate and len(ix) == len(live)
    assert recall(ix, live, vecs[live], queries) >= 0.97
    ix.remove(range(600))  # below half the threshold: back to exact, graph dropped
    assert not ix.approximate and len(ix) == 0


def test_threshold_zero_uses_the_graph_at_once(rng: np.random.Generator) -> None:
    ix = VectorIndex(DIM, ann_threshold=0)
    vecs = clustered(rng, 50)
    ix.add(np.arange(50), vecs)
    assert ix.approximate
    assert ix.search(vecs[7], 1)[0][0] == 7


@pytest.mark.parametrize("threshold", [10_000, 100])
def test_save_and_load_give_identical_results(tmp_path: Path, rng: np.random.Generator,
                                               threshold: int) -> None:
    path = tmp_path / "ns.idx"
    keys = np.arange(500, dtype=np.int64) + 10
    vecs = clustered(rng, 500)
    ix = VectorIndex(DIM, ann_threshold=threshold, path=path)
    ix.add(keys, vecs)
    ix.remove([10, 11, 12])
    ix.watermark = 4242
    ix.save()
    ix.save()  # a second save leaves no stale graph file behind
    assert len(list(tmp_path.iterdir())) == (2 if threshold == 100 else 1)
    back = VectorIndex.load(path, DIM, ann_threshold=threshold)
    assert back is not None
    assert (len(back), back.watermark, back.approximate) == (497, 4242, ix.approximate)
    allow = keys[::3]
    for q in clustered(rng, 10):
        assert back.search(q, 10) == ix.search(q, 10)
        assert back.search(q, 10, allow=allow) == ix.search(q, 10, allow=allow)
    back.add(keys[:3], vecs[:3])  # a loaded index keeps working incrementally
    assert back.search(vecs[1], 1)[0][0] == 11


def test_bad_files_load_as_none(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "ns.idx"
    assert VectorIndex.load(path, DIM) is None  # missing
    ix = VectorIndex(DIM, path=path)
    ix.add(np.arange(40), rng.standard_normal((40, DIM)))
    ix.save()
    good = path.read_bytes()
    assert VectorIndex.load(path, DIM + 1) is None  # another dimension
    for bad in (good[:-1], good[:30], b"", good + b"x",
                good[:200] + bytes([good[200] ^ 1]) + good[201:],
                good[:8] + b"\x09" + good[9:]):  # flipped bit, other format version
        path.write_bytes(bad)
        assert VectorIndex.load(path, DIM) is None
    path.write_bytes(good)
    assert VectorIndex.load(path, DIM) is not None


def test_a_bad_graph_file_is_rebuilt_from_the_vectors(tmp_path: Path,
                                                      rng: np.random.Generator) -> None:
    path = tmp_path / "ns.idx"
    vecs = clustered(rng, 300)
    ix = VectorIndex(DIM, ann_threshold=100, path=path)
    ix.add(np.arange(300), vecs)
    ix.save()
    (graph,) = tmp_path.glob("ns.idx.*.ann")
    graph.write_bytes(graph.read_bytes()[:-10])
    back = VectorIndex.load(path, DIM, ann_threshold=100)
    assert back is not None and back.approximate
    assert back.search(vecs[5], 1)[0][0] == 5


def test_searches_from_threads_during_adds(rng: np.random.Generator) -> None:
    ix = VectorIndex(DIM, ann_threshold=300)
    vecs = clustered(rng, 1200)
    ix.add(np.arange(100), vecs[:100])
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher(seed: int) -> None:
        r = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                i = int(r.integers(0, 100))  # always present, never removed
                got = ix.search(vecs[i], 5, allow=None if seed % 2 else np.arange(200))
                assert got[0][0] == i and got[0][1] == pytest.approx(1.0, abs=1e-4)
                scores = [s for _, s in got]
                assert scores == sorted(scores, reverse=True)
                assert len({k for k, _ in got}) == len(got)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=searcher, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    try:
        for start in range(100, 1200, 50):  # crosses the threshold mid-way
            ix.add(np.arange(start, start + 50), vecs[start:start + 50])
            if start > 100:
                ix.remove(range(start - 20, start - 10))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert ix.approximate and len(ix) == 1200 - 10 * 21


def test_a_removed_key_comes_back_after_its_graph_slot_was_reused(
        rng: np.random.Generator) -> None:
    vecs = clustered(rng, 40)
    ix = VectorIndex(DIM, ann_threshold=0)
    ix.add(np.arange(30), vecs[:30])
    ix.remove(range(10))
    ix.add(np.arange(100, 110), vecs[30:40])  # new keys take the freed slots
    ix.add(np.arange(10), vecs[:10])  # and the old keys come back
    assert ix.approximate and len(ix) == 40
    for i in range(10):
        assert ix.search(vecs[i], 1)[0][0] == i
        assert ix.search(vecs[30 + i], 1)[0][0] == 100 + i
    ix.remove(range(40))
    ix.remove(range(100, 110))
    assert len(ix) == 0 and ix.search(vecs[0], 3) == []
