"""Workspaces that follow their runs: what it costs to copy a snapshot to the shared
snapshot store, and to bring it to another node.

Builds a workspace (default: 500 files of 40 KB, 20 MB, random content), snapshots it
into one node's store and, for each shared store (``store``: PostgreSQL's tables, or
SQLite's without a URL; ``path``: a directory), times:

1. the first copy (every blob uploaded);
2. the copy of an unchanged snapshot (median of 5: what every snapshot pays when
   nothing changed: one query for what is there);
3. a snapshot after changing one file, copied;
4. bringing the snapshot to a second node that has nothing (fetch every blob, check
   it, restore the whole tree);
5. after one more file changed on the first node: bringing it to the second node
   again (fetch one blob, restore with the stat cache);
6. reading an agent's workspace head (what a run's start on a node with a shared store
   pays; median of 200).

Prints one JSON line on stdout; progress goes to stderr.

    .venv/bin/python bench/workspace_follow.py [--url postgresql://...] [--mb 20]
        [--files 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import psycopg

from _load import info
from agentd.sandbox.snapshot_objects import (
    DirObjects,
    SnapshotObjects,
    StoreObjects,
    pull_snapshot,
    push_snapshot,
)
from agentd.sandbox.snapshots import SnapshotStore
from agentd.store import Lease, NewEvent, open_store


def build(root: Path, files: int, size: int, rng: random.Random) -> list[Path]:
    paths = []
    for i in range(files):
        directory = root / f"dir{i % 20:02d}"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"file{i:05d}.bin"
        path.write_bytes(rng.randbytes(size))
        paths.append(path)
    return paths


async def timed(call: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = call(*args, **kwargs)
    if asyncio.iscoroutine(result):
        result = await result
    return round((time.perf_counter() - start) * 1000, 2), result


async def one_backend(shared: SnapshotObjects, base: Path, paths: list[Path],
                      size: int, rng: random.Random) -> dict[str, Any]:
    ws = base / "ws"
    node_a = SnapshotStore(base / f"a-{shared.kind}")
    node_b = SnapshotStore(base / f"b-{shared.kind}")
    settle = node_a.racy_margin_ns / 1e9 + 0.05
    await asyncio.sleep(settle)  # (files written just now are hashed again otherwise)
    ref, _ = node_a.snapshot(ws, cache_key="bench")
    out: dict[str, Any] = {}
    info(f"{shared.kind}: first copy")
    out["push_first_ms"], pushed = await timed(push_snapshot, node_a, shared, "t", ref)
    out["push_first_bytes"] = pushed
    runs = [await timed(push_snapshot, node_a, shared, "t", ref) for _ in range(5)]
    out["push_unchanged_ms"] = statistics.median(ms for ms, _ in runs)
    info(f"{shared.kind}: one file changed")
    paths[0].write_bytes(rng.randbytes(size))
    await asyncio.sleep(settle)
    start = time.perf_counter()
    ref1, _ = node_a.snapshot(ws, cache_key="bench")
    out["push_change1_bytes"] = await push_snapshot(node_a, shared, "t", ref1)
    out["snapshot_and_push_change1_ms"] = round((time.perf_counter() - start) * 1000, 2)

    info(f"{shared.kind}: to a node that has nothing")
    copy = base / f"copy-{shared.kind}"
    start = time.perf_counter()
    out["pull_full_bytes"] = await pull_snapshot(node_b, shared, "t", ref1)
    node_b.restore(ref1, copy, cache_key="bench")
    out["pull_restore_full_ms"] = round((time.perf_counter() - start) * 1000, 2)

    info(f"{shared.kind}: one more change, to that node again")
    paths[1].write_bytes(rng.randbytes(size))
    await asyncio.sleep(settle)
    ref2, _ = node_a.snapshot(ws, cache_key="bench")
    await push_snapshot(node_a, shared, "t", ref2)
    start = time.perf_counter()
    out["pull_change1_bytes"] = await pull_snapshot(node_b, shared, "t", ref2)
    restored = node_b.restore(ref2, copy, cache_key="bench")
    out["pull_restore_change1_ms"] = round((time.perf_counter() - start) * 1000, 2)
    out["restore_change1_written"] = restored.written
    assert node_b.snapshot(copy, cache_key="bench")[0] == ref2
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("AGENTD_TEST_POSTGRES_URL", ""),
                        help="PostgreSQL (a schema of its own is made and dropped); "
                             "empty: SQLite")
    parser.add_argument("--mb", type=float, default=20.0)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    size = int(args.mb * 1_000_000) // args.files
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory(prefix="agentd-follow-") as tmp:
        base = Path(tmp)
        if args.url:
            with psycopg.connect(args.url, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {schema}")
            sep = "&" if "?" in args.url else "?"
            url = f"{args.url}{sep}options=-csearch_path%3D{schema}"
        else:
            url = f"sqlite:///{base / 'agentd.db'}"
        store = await open_store(url)
        try:
            info(f"building {args.files} files of {size} bytes")
            paths = build(base / "ws", args.files, size, rng)
            result: dict[str, Any] = {"bench": "workspace_follow", "database": store.dialect,
                                      "mb": args.mb, "files": args.files,
                                      "file_bytes": size}
            for shared in (StoreObjects(store), DirObjects(base / "shared")):
                result[shared.kind] = await one_backend(shared, base, paths, size, rng)
            agent = await store.create_agent(name="w", model="scripted", instructions="",
                                             tools=[], settings={})
            accepted = await store.accept_message(agent_id=agent.id, key="k",
                                                  content="x")
            await store.append(accepted.session.id, [NewEvent(
                kind="workspace.snapshot", run_id=accepted.run.id,
                data={"ref": "a" * 64, "taken_at": 1.0})], run_id=accepted.run.id,
                lease=Lease(owner="n1", ttl=60, acquire=True))
            reads = [(await timed(store.workspace_head, agent.id))[0] for _ in range(200)]
            result["head_read_ms_p50"] = statistics.median(reads)
        finally:
            await store.close()
            if args.url:
                with psycopg.connect(args.url, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA {schema} CASCADE")
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
