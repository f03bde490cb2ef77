"""The shared snapshot stores every node reads (agentd.sandbox.snapshot_objects): a
directory (``path``) and the database (``store``, on SQLite and PostgreSQL), each
through the same tests: objects round-trip exactly (chunked), are checked on the way
in and out, are kept apart by scope (tenant), marks only ever gain a taint, and the
collector removes only what nothing refers to. Then snapshots copied from one node's
store to another's through each, and damage found before a workspace is touched."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentd.clock import SYSTEM
from agentd.errors import InvalidInput, StoreError
from agentd.sandbox.snapshot_objects import (
    DirObjects,
    ObjectCorrupt,
    ObjectMissing,
    SnapshotObjects,
    StoreObjects,
    pull_snapshot,
    push_snapshot,
)
from agentd.sandbox.snapshots import SnapshotStore
from agentd.store import Store, open_store

MiB = 1 << 20


@pytest.fixture(params=["path", "sqlite",
                        pytest.param("postgresql", marks=pytest.mark.postgres)])
async def shared(request: pytest.FixtureRequest, tmp_path: Path
                 ) -> AsyncIterator[SnapshotObjects]:
    if request.param == "path":
        yield DirObjects(tmp_path / "shared")
        return
    url: str = (f"sqlite:///{tmp_path / 'agentd.db'}" if request.param == "sqlite"
                else request.getfixturevalue("pg_url"))
    store = await open_store(url, clock=SYSTEM)
    try:
        yield StoreObjects(store)
    finally:
        await store.close()


def _blob(tmp_path: Path, data: bytes, name: str = "blob") -> tuple[str, Path]:
    path = tmp_path / name
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), path


async def _age(shared: SnapshotObjects, scope: str, digest: str, seconds: float) -> None:
    """Make an object look last used ``seconds`` ago (what the collector reads)."""
    then = time.time() - seconds
    if isinstance(shared, DirObjects):
        path = shared.root / scope / "objects" / digest[:2] / digest[2:]
        os.utime(path, (then, then))
        return
    assert isinstance(shared, StoreObjects)
    store: Store = shared.store
    await store.engine.write(lambda tx: tx.execute(
        "UPDATE snapshot_objects SET used_at = ? WHERE scope = ? AND digest = ?",
        (then, scope, digest)))


async def _damage(shared: SnapshotObjects, scope: str, digest: str) -> None:
    """Flip a byte of a stored object behind the store's back."""
    if isinstance(shared, DirObjects):
        path = shared.root / scope / "objects" / digest[:2] / digest[2:]
        os.chmod(path, 0o600)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        return
    assert isinstance(shared, StoreObjects)

    def op(tx: object) -> None:
        row = tx.one("SELECT data FROM snapshot_chunks WHERE scope = ? AND digest = ? "  # type: ignore[attr-defined]
                     "AND n = 0", (scope, digest))
        data = bytearray(row[0])
        data[len(data) // 2] ^= 0xFF
        tx.execute("UPDATE snapshot_chunks SET data = ? WHERE scope = ? AND digest = ? "  # type: ignore[attr-defined]
                   "AND n = 0", (bytes(data), scope, digest))

    await shared.store.engine.write(op)


async def _remove(shared: SnapshotObjects, scope: str, digest: str) -> None:
    if isinstance(shared, DirObjects):
        (shared.root / scope / "objects" / digest[:2] / digest[2:]).unlink()
        return
    assert isinstance(shared, StoreObjects)
    await shared.store.engine.write(lambda tx: tx.execute(
        "DELETE FROM snapshot_chunks WHERE scope = ? AND digest = ?", (scope, digest)))


async def test_objects_round_trip_exactly_in_chunks(shared: SnapshotObjects,
                                                    tmp_path: Path) -> None:
    # Empty, small, exactly one chunk, and several batches of chunks plus a tail.
    for i, data in enumerate([b"", b"hello", os.urandom(MiB),
                              os.urandom(9 * MiB + 12345)]):
        digest, source = _blob(tmp_path, data, f"in{i}")
        assert await shared.put("t1", digest, source) == len(data)
        assert await shared.put("t1", digest, source) == 0  # stored once
        out = tmp_path / f"out{i}"
        assert await shared.get("t1", digest, out) == len(data)
        assert out.read_bytes() == data
    assert await shared.present("t1", [digest, "0" * 64]) == {digest}


async def test_a_source_that_does_not_match_its_name_is_not_stored(
        shared: SnapshotObjects, tmp_path: Path) -> None:
    digest, source = _blob(tmp_path, os.urandom(2 * MiB + 7))
    source.write_bytes(b"something else")  # the local object changed under its name
    with pytest.raises(ObjectCorrupt, match="does not match"):
        await shared.put("t1", digest, source)
    assert await shared.present("t1", [digest]) == set()
    with pytest.raises(ObjectMissing):
        await shared.get("t1", digest, tmp_path / "out")


@pytest.mark.parametrize("size", [100, 3 * MiB])
async def test_damaged_or_missing_objects_are_refused_and_nothing_is_left(
        shared: SnapshotObjects, tmp_path: Path, size: int) -> None:
    digest, source = _blob(tmp_path, os.urandom(size))
    await shared.put("t1", digest, source)
    await _damage(shared, "t1", digest)
    out = tmp_path / "out"
    with pytest.raises(ObjectCorrupt) as caught:
        await shared.get("t1", digest, out)
    assert caught.value.code == "snapshot_corrupt" and not caught.value.retryable
    assert not out.exists()
    # The damaged object is gone from the store: the next copy of it stores it again.
    assert await shared.present("t1", [digest]) == set()
    with pytest.raises(ObjectMissing):
        await shared.get("t1", digest, out)
    assert await shared.put("t1", digest, source) == size
    assert await shared.get("t1", digest, out) == size
    out.unlink()
    await _remove(shared, "t1", digest)
    with pytest.raises(StoreError) as missing:  # (chunks gone: missing or corrupt)
        await shared.get("t1", digest, out)
    assert missing.value.code == "snapshot_corrupt"
    assert not out.exists()


async def test_scopes_keep_tenants_apart(shared: SnapshotObjects, tmp_path: Path) -> None:
    """One tenant's object is not found, read or deduplicated under another's scope:
    storing the same bytes costs the second tenant the upload (so it learns nothing
    of what the first holds)."""
    digest, source = _blob(tmp_path, b"tenant one's secret")
    assert await shared.put("one", digest, source) > 0
    assert await shared.present("two", [digest]) == set()
    with pytest.raises(ObjectMissing):
        await shared.get("two", digest, tmp_path / "out")
    assert await shared.put("two", digest, source) > 0  # not deduplicated
    for bad in ("..", "a/b", "", "x" * 200):
        with pytest.raises(InvalidInput):
            await shared.get(bad, digest, tmp_path / "out2")
    with pytest.raises(InvalidInput):
        await shared.get("one", "../../etc/passwd", tmp_path / "out3")


async def test_a_mark_only_ever_gains_a_taint(shared: SnapshotObjects) -> None:
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    await shared.mark("agent1", {a: "", b: "came from the web"})
    await shared.mark("agent1", {a: "written while tainted", b: ""})
    await shared.mark("agent1", {a: ""})
    assert await shared.marks("agent1", [a, b, c]) == {
        a: "written while tainted", b: "came from the web"}
    assert await shared.marks("agent2", [a, b]) == {}


async def test_collect_removes_only_what_nothing_refers_to(tmp_path: Path,
                                                           shared: SnapshotObjects) -> None:
    local = SnapshotStore(tmp_path / "local", racy_margin_s=0.0)
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "kept.txt").write_text("kept")
    kept, _ = local.snapshot(ws, cache_key="a")
    await push_snapshot(local, shared, "t1", kept)
    (ws / "kept.txt").unlink()
    (ws / "gone.txt").write_text("gone")
    gone, _ = local.snapshot(ws, cache_key="a")
    await push_snapshot(local, shared, "t1", gone)
    (ws / "gone.txt").write_text("recent")
    recent, _ = local.snapshot(ws, cache_key="a")
    await push_snapshot(local, shared, "t1", recent)
    old = 2 * shared.grace_s
    for ref in (kept, gone):
        await _age(shared, "t1", ref, old)
        for entry in local.manifest(ref).values():
            if entry["type"] == "file":
                await _age(shared, "t1", entry["hash"], old)
    # ``recent``'s objects are young: kept though no log names it (its event may be on
    # its way); ``gone``'s are old and unnamed: removed; ``kept`` is named.
    assert await shared.collect({kept}) == 2
    present = await shared.present("t1", [kept, gone, recent])
    assert present == {kept, recent}
    copy = SnapshotStore(tmp_path / "copy")
    await pull_snapshot(copy, shared, "t1", kept)
    copy.restore(kept, tmp_path / "back")
    assert (tmp_path / "back" / "kept.txt").read_text() == "kept"


async def test_a_snapshot_copied_through_the_shared_store_restores_exactly(
        tmp_path: Path, shared: SnapshotObjects) -> None:
    node_a = SnapshotStore(tmp_path / "a")
    node_b = SnapshotStore(tmp_path / "b")
    ws = tmp_path / "ws"
    (ws / "dir" / "sub").mkdir(parents=True)
    (ws / "small.txt").write_text("small")
    (ws / "dir" / "big.bin").write_bytes(os.urandom(5 * MiB + 3))
    (ws / "dir" / "sub" / "same.txt").write_text("small")  # one object for both
    os.symlink("small.txt", ws / "link")
    os.chmod(ws / "small.txt", 0o640)
    ref, _ = node_a.snapshot(ws, cache_key="a")
    first = await push_snapshot(node_a, shared, "t1", ref)
    assert first > 5 * MiB
    assert await push_snapshot(node_a, shared, "t1", ref) == 0  # nothing new
    assert await pull_snapshot(node_b, shared, "t1", ref) > 5 * MiB
    out = tmp_path / "out"
    node_b.restore(ref, out)
    again, _ = node_b.snapshot(out, cache_key="b")
    assert again == ref  # the same content, modes and link
    assert await pull_snapshot(node_b, shared, "t1", ref) == 0  # all here now


async def test_damage_in_the_shared_store_leaves_the_workspace_untouched(
        tmp_path: Path, shared: SnapshotObjects) -> None:
    node_a = SnapshotStore(tmp_path / "a")
    node_b = SnapshotStore(tmp_path / "b")
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "one.txt").write_text("one")
    (ws / "two.txt").write_text("two")
    ref, _ = node_a.snapshot(ws, cache_key="a")
    await push_snapshot(node_a, shared, "t1", ref)
    two = hashlib.sha256(b"two").hexdigest()
    await _damage(shared, "t1", two)
    b_ws = tmp_path / "b_ws"
    b_ws.mkdir()
    (b_ws / "mine.txt").write_text("what node b had")
    with pytest.raises(ObjectCorrupt):
        await pull_snapshot(node_b, shared, "t1", ref)
    assert not node_b.has_object(two)
    assert {p.name: p.read_text() for p in b_ws.iterdir()} == {
        "mine.txt": "what node b had"}
    # Another tenant's scope does not have it at all.
    with pytest.raises(ObjectMissing):
        await pull_snapshot(SnapshotStore(tmp_path / "c"), shared, "t2", ref)
