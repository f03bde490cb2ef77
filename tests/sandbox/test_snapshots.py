"""Workspace snapshots: exact round trips, incremental cost, restores that cannot be
steered outside the workspace, gc, damaged refs and crashes. Real files in tmp_path."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentd.errors import InvalidInput, NotFound, PayloadTooLarge, StoreError
from agentd.sandbox.snapshots import SnapshotStore

Tree = dict[str, Any]


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    # No racy margin: a file written before a snapshot began is trusted by the next
    # one, so hashed_files counts are exact without sleeping. The margin has its own
    # test below.
    return SnapshotStore(tmp_path / "snapshots", racy_margin_s=0.0)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    return root


def describe(root: Path) -> Tree:
    """Everything a snapshot promises to keep, read without following links."""
    out: Tree = {}
    for item in sorted(os.scandir(root), key=lambda e: e.name):
        info = item.stat(follow_symlinks=False)
        if stat.S_ISLNK(info.st_mode):
            out[item.name] = ("link", os.readlink(item.path))
        elif stat.S_ISDIR(info.st_mode):
            out[item.name] = ("dir", stat.S_IMODE(info.st_mode), describe(Path(item.path)))
        elif stat.S_ISREG(info.st_mode):
            out[item.name] = ("file", stat.S_IMODE(info.st_mode),
                              Path(item.path).read_bytes())
        else:
            out[item.name] = ("other",)
    return out


def build(root: Path, tree: Tree) -> None:
    """Write a tree: bytes or (bytes, mode) are files, ("link", target) links, dicts
    directories."""
    root.mkdir(parents=True, exist_ok=True)
    for name, node in tree.items():
        path = root / name
        if isinstance(node, dict):
            build(path, node)
        elif isinstance(node, tuple) and node[0] == "link":
            os.symlink(node[1], path)
        else:
            data, mode = node if isinstance(node, tuple) else (node, 0o644)
            path.write_bytes(data)
            path.chmod(mode)


def contents(tree: Tree) -> set[bytes]:
    out: set[bytes] = set()
    for node in tree.values():
        if isinstance(node, dict):
            out |= contents(node)
        elif isinstance(node, bytes):
            out.add(node)
        elif node[0] != "link":
            out.add(node[0])
    return out


def objects(store: SnapshotStore) -> set[str]:
    base = store.root / "objects"
    return {p.parent.name + p.name for p in base.glob("*/*")} if base.exists() else set()


RICH: Tree = {
    "README.md": b"# hello\n",
    "empty.txt": b"",
    "run.sh": (b"#!/bin/sh\necho hi\n", 0o755),
    "secret.key": (b"k" * 32, 0o600),
    "naïve 文件 ✓.txt": "unicode ✓\n".encode(),
    "blob.bin": bytes(range(256)) * 64,
    "big.bin": os.urandom(2_500_000),  # above the in-memory threshold: streamed
    "src": {"pkg": {"__init__.py": b"", "mod.py": b"x = 1\n", "deep": {"deeper": {}}},
            "same.txt": b"# hello\n"},
    "empty-dir": {},
    "link-to-file": ("link", "README.md"),
    "link-to-dir": ("link", "src/pkg"),
    "dangling": ("link", "does/not/exist"),
    "absolute": ("link", "/etc/passwd"),
}


def test_round_trip_keeps_files_dirs_links_modes_and_names(
        store: SnapshotStore, ws: Path, tmp_path: Path) -> None:
    build(ws, RICH)
    (ws / "src" / "pkg").chmod(0o750)
    ref, stats = store.snapshot(ws, cache_key="agent-1")
    assert len(ref) == 64 and store.exists(ref)
    assert stats.files == 10 and stats.skipped == []
    # "same.txt" has README's content and the two empty files are one object too.
    assert stats.new_objects == len(contents(RICH)) == 8
    assert stats.new_bytes == sum(len(c) for c in contents(RICH))

    manifest = store.manifest(ref)
    assert manifest["run.sh"]["mode"] == 0o755 and manifest["run.sh"]["type"] == "file"
    assert manifest["src/pkg"] == {"type": "dir", "mode": 0o750}
    assert manifest["empty-dir"]["type"] == "dir"
    assert manifest["absolute"] == {"type": "link", "target": "/etc/passwd"}
    assert manifest["big.bin"]["hash"] == hashlib.sha256(RICH["big.bin"]).hexdigest()

    target = tmp_path / "restored" / "ws"
    restored = store.restore(ref, target)
    assert describe(target) == describe(ws)
    assert restored.written == len(manifest) and restored.removed == 0
    # Restoring the same snapshot again changes nothing.
    again = store.restore(ref, target)
    assert (again.written, again.removed, again.unchanged) == (0, 0, len(manifest))


def test_same_content_gives_the_same_ref_and_stores_nothing_new(
        store: SnapshotStore, tmp_path: Path) -> None:
    build(tmp_path / "a", RICH)
    build(tmp_path / "b", RICH)
    ref_a, first = store.snapshot(tmp_path / "a", cache_key="a")
    stored = objects(store)
    ref_b, second = store.snapshot(tmp_path / "b", cache_key="b")
    assert ref_a == ref_b
    assert second.hashed_files == 10  # a new cache key: read, but nothing to store
    assert (second.new_objects, second.new_bytes) == (0, 0)
    assert objects(store) == stored
    assert first.new_objects == 8


def test_an_unchanged_workspace_is_not_read_again(store: SnapshotStore, ws: Path) -> None:
    build(ws, RICH)
    ref, _ = store.snapshot(ws, cache_key="a")
    again, stats = store.snapshot(ws, cache_key="a")
    assert again == ref
    assert (stats.hashed_files, stats.hashed_bytes, stats.new_objects) == (0, 0, 0)
    assert stats.files == 10 and stats.bytes > 2_500_000


def test_one_changed_file_is_the_only_one_hashed_and_stored(
        store: SnapshotStore, ws: Path) -> None:
    build(ws, RICH)
    ref, _ = store.snapshot(ws, cache_key="a")
    (ws / "src" / "pkg" / "mod.py").write_bytes(b"x = 2\ny = 3\n")
    changed, stats = store.snapshot(ws, cache_key="a")
    assert changed != ref
    assert (stats.hashed_files, stats.hashed_bytes) == (1, 12)
    assert (stats.new_objects, stats.new_bytes) == (1, 12)
    before, after = store.manifest(ref), store.manifest(changed)
    assert {k for k in after if after[k] != before[k]} == {"src/pkg/mod.py"}


def test_same_size_same_mtime_rewrite_is_detected(store: SnapshotStore, ws: Path) -> None:
    # What tar, rsync -t or cp -p leave behind: new content, old size and mtime.
    target = ws / "data.txt"
    target.write_bytes(b"aaaa")
    old = target.stat()
    store.snapshot(ws, cache_key="a")
    target.write_bytes(b"bbbb")
    os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert target.stat().st_mtime_ns == old.st_mtime_ns
    ref, stats = store.snapshot(ws, cache_key="a")
    assert stats.hashed_files == 1
    assert store.manifest(ref)["data.txt"]["hash"] == hashlib.sha256(b"bbbb").hexdigest()


def test_racy_cache_entry_within_the_margin_is_hashed_again(tmp_path: Path, ws: Path) -> None:
    """The racy-git case: a file rewritten within the timestamp tick of the read that
    hashed it keeps its stat signature. Reproduced by writing the cache that such a
    scan would have left: today's stat, yesterday's hash."""
    store = SnapshotStore(tmp_path / "snapshots", racy_margin_s=1.0)
    target = ws / "data.txt"
    target.write_bytes(b"old!")
    store.snapshot(ws, cache_key="a")
    target.write_bytes(b"new!")
    now = target.stat()
    cache_file = store.root / "cache" / "a.json"

    def forge(scanned_ns: int) -> None:
        cache = json.loads(cache_file.read_bytes())
        old_hash = hashlib.sha256(b"old!").hexdigest()
        cache["entries"]["data.txt"] = [now.st_size, now.st_mtime_ns, now.st_ctime_ns,
                                        now.st_ino, old_hash]
        cache["scanned_ns"] = scanned_ns
        cache_file.write_text(json.dumps(cache))

    # The scan that recorded it began right after the change: not trusted.
    forge(now.st_ctime_ns + 1_000)
    ref, stats = store.snapshot(ws, cache_key="a")
    assert stats.hashed_files == 1
    assert store.manifest(ref)["data.txt"]["hash"] == hashlib.sha256(b"new!").hexdigest()

    # Well outside the margin the same entry is believed: the margin is what caught it.
    forge(now.st_ctime_ns + 5_000_000_000)
    ref, stats = store.snapshot(ws, cache_key="a")
    assert stats.hashed_files == 0
    assert store.manifest(ref)["data.txt"]["hash"] == hashlib.sha256(b"old!").hexdigest()


@pytest.mark.parametrize("cache_key", [None, "a"])
def test_restore_removes_extras_and_leaves_identical_files_alone(
        store: SnapshotStore, ws: Path, cache_key: str | None) -> None:
    build(ws, RICH)
    ref, _ = store.snapshot(ws, cache_key="a")
    expected = describe(ws)
    kept = {name: (ws / name).stat().st_ino for name in ("README.md", "big.bin", "run.sh")}
    build(ws, {"extra.txt": b"x", "extra-dir": {"a": {"b": b"1"}, "c": b"2"}})
    (ws / "src" / "pkg" / "mod.py").write_bytes(b"changed")
    (ws / "secret.key").chmod(0o644)
    (ws / "empty.txt").unlink()
    (ws / "empty.txt").mkdir()
    (ws / "empty.txt" / "inside").write_bytes(b"in a dir where a file was")
    (ws / "empty-dir").rmdir()
    (ws / "link-to-file").unlink()
    os.symlink("elsewhere", ws / "link-to-file")

    stats = store.restore(ref, ws, cache_key=cache_key)
    assert describe(ws) == expected
    assert {name: (ws / name).stat().st_ino for name in kept} == kept
    # extra.txt, extra-dir and its 3 paths, the directory at empty.txt and its file.
    assert stats.removed == 1 + 4 + 2
    # mod.py, the mode of secret.key, empty.txt, empty-dir, link-to-file.
    assert stats.written == 5
    assert stats.written + stats.unchanged == len(store.manifest(ref))


def test_restore_replaces_a_symlinked_directory_without_touching_its_target(
        store: SnapshotStore, ws: Path, tmp_path: Path) -> None:
    build(ws, {"sub": {"passwd": b"from the snapshot\n"}, "notes.txt": b"mine\n"})
    ref, _ = store.snapshot(ws, cache_key="a")
    outside = tmp_path / "outside"
    build(outside, {"passwd": b"SENTINEL\n", "notes.txt": b"OUTSIDE NOTES\n"})
    before = describe(outside)
    # After the snapshot, the agent swaps the directory for a link pointing out, and
    # the file for a link to a file outside.
    for name in ("sub/passwd", "notes.txt"):
        (ws / name).unlink()
    (ws / "sub").rmdir()
    os.symlink(outside, ws / "sub")
    os.symlink(outside / "notes.txt", ws / "notes.txt")

    store.restore(ref, ws, cache_key="a")
    assert describe(outside) == before
    assert not (ws / "sub").is_symlink() and (ws / "sub").is_dir()
    assert (ws / "sub" / "passwd").read_bytes() == b"from the snapshot\n"
    assert not (ws / "notes.txt").is_symlink()
    assert (ws / "notes.txt").read_bytes() == b"mine\n"


def test_restore_never_writes_through_a_hard_link(
        store: SnapshotStore, ws: Path, tmp_path: Path) -> None:
    build(ws, {"same.txt": (b"content", 0o644), "other.txt": b"snapshot"})
    ref, _ = store.snapshot(ws, cache_key="a")
    for name in ("same.txt", "other.txt"):
        (ws / name).unlink()
    outside = tmp_path / "outside"
    build(outside, {"same.txt": (b"content", 0o600), "other.txt": b"OUTSIDE"})
    for name in ("same.txt", "other.txt"):
        os.link(outside / name, ws / name)
    store.restore(ref, ws)
    assert (outside / "other.txt").read_bytes() == b"OUTSIDE"
    assert stat.S_IMODE((outside / "same.txt").stat().st_mode) == 0o600
    assert (ws / "other.txt").read_bytes() == b"snapshot"
    assert stat.S_IMODE((ws / "same.txt").stat().st_mode) == 0o644


def test_read_only_directories_are_restored_and_removed(
        store: SnapshotStore, ws: Path) -> None:
    # Go's module cache, for one, leaves read-only trees behind.
    build(ws, {"ro": {"f.txt": b"1", "sub": {"g.txt": b"2"}}})
    (ws / "ro" / "sub").chmod(0o555)
    (ws / "ro").chmod(0o555)
    try:
        ref, _ = store.snapshot(ws, cache_key="a")
        expected = describe(ws)
        store.restore(ref, ws.parent / "copy")
        assert describe(ws.parent / "copy") == expected
        empty, _ = store.snapshot(ws.parent / "nothing", cache_key="b")
        assert store.restore(empty, ws.parent / "copy").removed == 4
        assert describe(ws.parent / "copy") == {}
    finally:
        for path in (ws / "ro", ws / "ro" / "sub"):
            path.chmod(0o755)


def _permissions_enforced(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    probe.chmod(0)
    try:
        probe.read_bytes()
        return False
    except PermissionError:
        return True
    finally:
        probe.unlink()


def test_unreadable_entries_are_skipped_and_a_restore_removes_them(
        store: SnapshotStore, ws: Path, tmp_path: Path) -> None:
    if not _permissions_enforced(tmp_path):
        pytest.skip("permission bits are not enforced here (root with CAP_DAC_OVERRIDE)")
    build(ws, {"ok.txt": b"ok", "locked": {"inside.txt": b"x"}, "noread.txt": b"n"})
    (ws / "noread.txt").chmod(0)
    (ws / "locked").chmod(0)
    try:
        ref, stats = store.snapshot(ws, cache_key="a")
        assert stats.skipped == ["locked", "noread.txt"]
        assert set(store.manifest(ref)) == {"ok.txt"}
        assert store.restore(ref, ws).removed == 3
        assert describe(ws) == {"ok.txt": ("file", 0o644, b"ok")}
    finally:
        if (ws / "locked").exists():
            (ws / "locked").chmod(0o755)


def test_a_symlinked_workspace_is_refused(store: SnapshotStore, ws: Path,
                                          tmp_path: Path) -> None:
    build(ws, {"a": b"1"})
    ref, _ = store.snapshot(ws, cache_key="a")
    os.symlink(tmp_path / "elsewhere", tmp_path / "link")
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(InvalidInput, match="symbolic link"):
        store.restore(ref, tmp_path / "link")
    with pytest.raises(InvalidInput, match="symbolic link"):
        store.snapshot(tmp_path / "link", cache_key="a")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_special_files_are_skipped_and_reported(store: SnapshotStore, ws: Path,
                                                tmp_path: Path) -> None:
    build(ws, {"keep.txt": b"k", "dir": {}})
    os.mkfifo(ws / "dir" / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock_dir = Path(tempfile.mkdtemp(dir="/tmp"))  # AF_UNIX paths are short
    os.symlink(ws, sock_dir / "w")
    try:
        sock.bind(str(sock_dir / "w" / "sock"))
        ref, stats = store.snapshot(ws, cache_key="a")  # must not hang on the FIFO
    finally:
        sock.close()
        (sock_dir / "w").unlink()
        sock_dir.rmdir()
    assert stats.skipped == ["dir/pipe", "sock"]
    assert set(store.manifest(ref)) == {"keep.txt", "dir"}
    store.restore(ref, tmp_path / "copy")
    assert sorted(os.listdir(tmp_path / "copy")) == ["dir", "keep.txt"]
    assert os.listdir(tmp_path / "copy" / "dir") == []


def test_gc_keeps_what_is_reachable_and_removes_the_rest(
        store: SnapshotStore, ws: Path, tmp_path: Path) -> None:
    build(ws, {"shared.txt": b"shared", "a.txt": b"only in A"})
    ref_a, _ = store.snapshot(ws, cache_key="a")
    (ws / "a.txt").unlink()
    (ws / "b.txt").write_bytes(b"only in B")
    ref_b, _ = store.snapshot(ws, cache_key="a")
    (ws / "c.txt").write_bytes(b"only in C")
    ref_c, _ = store.snapshot(ws, cache_key="a")
    assert len(objects(store)) == 7  # 4 contents, 3 manifests

    assert store.gc([ref_b, "not-a-ref", "0" * 64]) == 4  # A, C, "only in A" and "C"
    assert store.exists(ref_b) and not store.exists(ref_a) and not store.exists(ref_c)
    assert len(objects(store)) == 3
    store.restore(ref_b, tmp_path / "b")
    assert describe(tmp_path / "b") == {"b.txt": ("file", 0o644, b"only in B"),
                                        "shared.txt": ("file", 0o644, b"shared")}
    with pytest.raises(NotFound):
        store.restore(ref_a, tmp_path / "a")


def test_a_snapshot_after_gc_stores_again_what_gc_deleted(
        store: SnapshotStore, ws: Path, tmp_path: Path) -> None:
    # The stat cache still knows these files: it must forget what gc deleted, or the
    # next snapshot would name objects that are gone.
    build(ws, {"a.txt": b"a", "b.txt": b"b"})
    ref, _ = store.snapshot(ws, cache_key="a")
    assert store.gc([]) == 3 and objects(store) == set()
    again, stats = store.snapshot(ws, cache_key="a")
    assert again == ref and stats.new_objects == 2
    store.restore(again, tmp_path / "copy")
    assert describe(tmp_path / "copy") == describe(ws)


def test_gc_min_age_keeps_recent_snapshots(store: SnapshotStore, ws: Path) -> None:
    build(ws, {"a.txt": b"a"})
    ref, _ = store.snapshot(ws, cache_key="a")
    assert store.gc([], min_age_s=3600) == 0
    assert store.exists(ref)
    assert store.gc([]) == 2


def test_bad_refs_get_clear_errors(store: SnapshotStore, ws: Path, tmp_path: Path) -> None:
    build(ws, {"a.txt": b"a", "b.txt": b"b"})
    ref, _ = store.snapshot(ws, cache_key="a")
    for bad in ("", "abc", ref.upper(), ref + "0", "../" + ref[3:]):
        assert not store.exists(bad)
        with pytest.raises(InvalidInput, match="not a snapshot ref"):
            store.restore(bad, tmp_path / "x")
    unknown = "ab" * 32
    with pytest.raises(NotFound, match="no snapshot") as info:
        store.manifest(unknown)
    assert info.value.code == "snapshot_not_found"
    content = hashlib.sha256(b"a").hexdigest()  # an object, but not a snapshot
    assert not store.exists(content)
    with pytest.raises(NotFound, match="file content"):
        store.restore(content, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_damaged_snapshots_fail_before_touching_the_workspace(
        store: SnapshotStore, ws: Path, tmp_path: Path) -> None:
    build(ws, {"a.txt": b"a", "b.txt": b"b"})
    ref, _ = store.snapshot(ws, cache_key="a")
    target = tmp_path / "target"
    build(target, {"mine.txt": b"precious"})

    def path_of(digest: str) -> Path:
        return store.root / "objects" / digest[:2] / digest[2:]

    missing = path_of(hashlib.sha256(b"b").hexdigest())
    missing.unlink()
    with pytest.raises(StoreError, match="misses 1 object") as info:
        store.restore(ref, target)
    assert info.value.code == "snapshot_corrupt"
    assert describe(target) == {"mine.txt": ("file", 0o644, b"precious")}

    damaged = path_of(hashlib.sha256(b"a").hexdigest())
    damaged.chmod(0o644)
    damaged.write_bytes(b"z")
    missing.write_bytes(b"b")
    with pytest.raises(StoreError, match="damaged object"):
        store.restore(ref, target)
    assert not (target / "a.txt").exists()  # never half-written

    manifest = path_of(ref)
    manifest.chmod(0o644)
    manifest.write_bytes(manifest.read_bytes().replace(b"a.txt", b"c.txt"))
    with pytest.raises(StoreError, match="does not match its hash"):
        store.manifest(ref)


def test_a_workspace_over_the_limits_is_refused_before_anything_is_stored(
        tmp_path: Path, ws: Path) -> None:
    build(ws, {"a": b"x" * 600, "d": {"b": b"y" * 600}})
    store = SnapshotStore(tmp_path / "snapshots", max_bytes=1000)
    with pytest.raises(PayloadTooLarge, match="more than 1000 bytes") as info:
        store.snapshot(ws, cache_key="a")
    assert info.value.code == "workspace_too_large"
    assert objects(store) == set()
    small = SnapshotStore(tmp_path / "snapshots", max_files=2)
    with pytest.raises(PayloadTooLarge, match="more than 2 entries"):
        small.snapshot(ws, cache_key="a")


def test_cache_keys_and_workspaces_are_checked(store: SnapshotStore, tmp_path: Path) -> None:
    for key in ("", "../x", "a/b", ".hidden", "x" * 129):
        with pytest.raises(InvalidInput, match="cache key"):
            store.snapshot(tmp_path, cache_key=key)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(InvalidInput, match="not a directory"):
        store.snapshot(tmp_path / "file", cache_key="a")
    # A workspace not made yet is empty, and restoring creates it.
    empty, stats = store.snapshot(tmp_path / "missing", cache_key="a")
    assert store.manifest(empty) == {} and stats.files == 0
    store.restore(empty, tmp_path / "new" / "ws")
    assert (tmp_path / "new" / "ws").is_dir()


def test_concurrent_snapshots(store: SnapshotStore, tmp_path: Path) -> None:
    for i in range(4):
        build(tmp_path / f"w{i}", {"common.bin": b"c" * 3_000_000,
                                   "own.txt": f"{i}".encode(), "d": {"x": b"x"}})
    results: dict[tuple[int, int], str] = {}
    errors: list[BaseException] = []

    def run(i: int, n: int) -> None:
        try:
            # Two threads per workspace share a key: they take turns.
            results[(i, n)] = store.snapshot(tmp_path / f"w{i}", cache_key=f"k{i}")[0]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, n)) for i in range(4) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(results[(i, 0)] == results[(i, 1)] for i in range(4))
    assert len(set(results.values())) == 4
    assert len(objects(store)) == 1 + 4 + 1 + 4  # common, own x4, x, manifests x4


_CRASH = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from agentd.sandbox.snapshots import SnapshotStore

    calls, real = 0, os.fsync
    def fsync(fd):
        global calls
        calls += 1
        if calls == int(sys.argv[3]):
            os._exit(17)  # the process dies: no cleanup, no finally
        real(fd)
    os.fsync = fsync
    SnapshotStore(Path(sys.argv[1]), workers=1).snapshot(Path(sys.argv[2]), cache_key="c")
""")


@pytest.mark.parametrize("crash_at", [1, 4, 7, 12])
def test_a_crash_leaves_complete_objects_or_none(
        tmp_path: Path, ws: Path, crash_at: int) -> None:
    build(ws, {f"f{i}.txt": f"content {i}".encode() * (1 + i * 40_000) for i in range(8)})
    root = tmp_path / "snapshots"
    done = subprocess.run([sys.executable, "-c", _CRASH, str(root), str(ws), str(crash_at)],
                          capture_output=True, check=False)
    assert done.returncode == 17, done.stderr.decode()
    store = SnapshotStore(root)
    for digest in objects(store):
        data = (root / "objects" / digest[:2] / digest[2:]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest
        assert not store.exists(digest)  # no manifest made it

    ref, _ = store.snapshot(ws, cache_key="c")
    store.restore(ref, tmp_path / "copy")
    assert describe(tmp_path / "copy") == describe(ws)
    store.gc([ref])
    assert list((root / "tmp").iterdir()) == []


# --------------------------------------------------------------------------- property

_names = st.text(st.characters(codec="utf-8", exclude_characters="/\x00"),
                 min_size=1, max_size=6).filter(lambda n: n not in (".", ".."))
_files = st.tuples(st.binary(max_size=200), st.sampled_from([0o644, 0o755, 0o600, 0o444]))
_links = st.tuples(st.just("link"), st.text(st.characters(codec="utf-8",
                                                          exclude_characters="\x00"),
                                             min_size=1, max_size=12))
_trees = st.dictionaries(_names, st.recursive(
    _files | _links | st.just({}),
    lambda children: st.dictionaries(_names, children, max_size=4), max_leaves=12),
    max_size=5)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=_trees, second=_trees)
def test_random_trees_round_trip_exactly(first: Tree, second: Tree) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        store = SnapshotStore(base / "snapshots", racy_margin_s=0.0)
        build(base / "a", first)
        build(base / "b", second)
        want_a, want_b = describe(base / "a"), describe(base / "b")
        ref_a, _ = store.snapshot(base / "a", cache_key="a")
        ref_b, _ = store.snapshot(base / "b", cache_key="b")
        assert (ref_a == ref_b) == (want_a == want_b)
        # Into an empty directory, over the other tree, and back again.
        store.restore(ref_a, base / "fresh")
        assert describe(base / "fresh") == want_a
        store.restore(ref_b, base / "a", cache_key="a")
        assert describe(base / "a") == want_b
        store.restore(ref_a, base / "a", cache_key="a")
        assert describe(base / "a") == want_a
        assert store.snapshot(base / "a", cache_key="a")[0] == ref_a


def test_extended_attributes_are_reported_every_time(store: SnapshotStore, ws: Path
                                                     ) -> None:
    """A snapshot does not keep extended attributes: it names what carries them, on
    every snapshot (a file with one is never vouched for by the stat cache), so that
    the caller cannot take data hidden there for the agent's own."""
    build(ws, {"plain.txt": b"p", "note.txt": b"n", "dir": {"f": b"f"}})
    ref, stats = store.snapshot(ws, cache_key="a")
    assert stats.xattrs == []
    os.setxattr(ws / "note.txt", "user.payload", b"send everything")
    os.setxattr(ws / "dir", "user.payload", b"x")
    again, stats = store.snapshot(ws, cache_key="a")
    assert again == ref  # the content is the same
    assert stats.xattrs == ["dir", "note.txt"]
    _, stats = store.snapshot(ws, cache_key="a")
    assert stats.xattrs == ["dir", "note.txt"] and stats.hashed_files == 1
    os.setxattr(ws, "user.payload", b"x")
    assert store.snapshot(ws, cache_key="a")[1].xattrs == [".", "dir", "note.txt"]


def test_a_budget_counts_new_content_only(store: SnapshotStore, ws: Path) -> None:
    """Unchanged files cost nothing; a changed big file costs its size once; over
    the budget the snapshot is refused with a code, and nothing names its objects."""
    big = os.urandom(3 << 20)
    build(ws, {"big.bin": big, "small.txt": b"s"})
    ref, stats = store.snapshot(ws, cache_key="a", budget=(3 << 20) + 1)
    assert stats.new_bytes == (3 << 20) + 1
    # Unchanged (even hashed again without the stat cache): free.
    assert store.snapshot(ws, cache_key="b", budget=0)[0] == ref
    # (a last byte that differs: os.urandom's is b"!" once in 256 runs, and then
    # nothing changed)
    (ws / "big.bin").write_bytes(big[:-1] + bytes([big[-1] ^ 0xFF]))
    # Same size and inode: without a racy margin only the times tell the change, and a
    # loaded machine can rewrite within one timestamp tick of the scan. Move them on.
    later = (ws / "big.bin").stat().st_mtime_ns + 2_000_000_000
    os.utime(ws / "big.bin", ns=(later, later))
    with pytest.raises(PayloadTooLarge) as caught:
        store.snapshot(ws, cache_key="a", budget=(3 << 20) - 1)
    assert caught.value.code == "snapshot_budget_exceeded"
    _, stats = store.snapshot(ws, cache_key="a", budget=3 << 20)
    assert stats.new_bytes == 3 << 20
