"""Workspace snapshots: what a snapshot and a restore cost on a 100 MB workspace.

Builds a workspace in a temp directory (default: 1,000 files of 100 KB in 20
directories, random content) and a snapshot store next to it, then times:

1. the first snapshot (every file hashed, stored and fsynced);
2. a snapshot of the unchanged workspace (median of 5);
3. a snapshot after rewriting 1 file, then after rewriting 1% of the files;
4. a restore to the previous snapshot after a small change (1 file rewritten, 1 added),
   with the workspace's stat cache;
5. a full restore into an empty directory (no cache: every object read and verified).

Changes are made, then the store's racy margin is waited out before the snapshot, so
each figure is the cost of its own change: a file changed less than the margin before
a snapshot is hashed once more by the next one (see ``agentd.sandbox.snapshots``).
The workspace was just written, so reads come from the page cache.

Prints one JSON line on stdout; progress goes to stderr.

    .venv/bin/python bench/snapshots.py [--mb 100] [--files 1000] [--dirs 20]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from _load import info
from agentd.sandbox.snapshots import SnapshotStore


def build(root: Path, files: int, dirs: int, size: int, rng: random.Random) -> list[Path]:
    paths = []
    for i in range(files):
        directory = root / f"dir{i % dirs:02d}"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"file{i:05d}.bin"
        path.write_bytes(rng.randbytes(size))
        paths.append(path)
    return paths


def timed(call: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = call(*args, **kwargs)
    return round((time.perf_counter() - start) * 1000, 2), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=100.0, help="workspace size (MB)")
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--dirs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    size = int(args.mb * 1_000_000) // args.files

    with tempfile.TemporaryDirectory(prefix="agentd-snapshots-") as tmp:
        base = Path(tmp)
        ws = base / "ws"
        store = SnapshotStore(base / "snapshots")
        settle = store.racy_margin_ns / 1e9 + 0.05
        info(f"building {args.files} files of {size} bytes in {args.dirs} dirs")
        paths = build(ws, args.files, args.dirs, size, rng)
        time.sleep(settle)
        result: dict[str, Any] = {"bench": "snapshots", "mb": args.mb, "files": args.files,
                                  "dirs": args.dirs, "file_bytes": size,
                                  "workers": store.workers}

        info("first snapshot")
        ms, (ref0, stats) = timed(store.snapshot, ws, cache_key="bench")
        result.update(first_ms=ms, first_hashed_bytes=stats.hashed_bytes,
                      first_new_bytes=stats.new_bytes)

        info("unchanged x5")
        runs = [timed(store.snapshot, ws, cache_key="bench") for _ in range(5)]
        assert all(ref == ref0 for _, (ref, _) in runs)
        result.update(unchanged_ms=statistics.median(ms for ms, _ in runs),
                      unchanged_hashed_bytes=max(s.hashed_bytes for _, (_, s) in runs),
                      unchanged_new_bytes=max(s.new_bytes for _, (_, s) in runs))

        info("1 file changed")
        paths[0].write_bytes(rng.randbytes(size))
        time.sleep(settle)
        ms, (ref1, stats) = timed(store.snapshot, ws, cache_key="bench")
        result.update(change1_ms=ms, change1_hashed_bytes=stats.hashed_bytes,
                      change1_new_bytes=stats.new_bytes)

        changed = max(1, args.files // 100)
        info(f"{changed} files changed")
        for path in rng.sample(paths, changed):
            path.write_bytes(rng.randbytes(size))
        time.sleep(settle)
        ms, (ref2, stats) = timed(store.snapshot, ws, cache_key="bench")
        result.update(change1pct_ms=ms, change1pct_files=changed,
                      change1pct_hashed_bytes=stats.hashed_bytes,
                      change1pct_new_bytes=stats.new_bytes)

        info("small change, restore the previous snapshot")
        paths[1].write_bytes(rng.randbytes(size))
        (ws / "dir00" / "new.bin").write_bytes(rng.randbytes(size))
        time.sleep(settle)
        ms, restored = timed(store.restore, ref2, ws, cache_key="bench")
        result.update(restore_small_ms=ms, restore_small_written=restored.written,
                      restore_small_removed=restored.removed,
                      restore_small_unchanged=restored.unchanged)
        assert store.snapshot(ws, cache_key="bench")[0] == ref2

        info("full restore into an empty directory")
        ms, restored = timed(store.restore, ref2, base / "copy")
        result.update(restore_full_ms=ms, restore_full_written=restored.written)

        stored = sum(p.stat().st_size for p in (base / "snapshots" / "objects").rglob("*")
                     if p.is_file())
        result.update(store_bytes=stored, refs=len({ref0, ref1, ref2}))
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
