"""Where workspace snapshots are kept so that every node of a cluster can restore them.

A node snapshots an agent's workspace into its own :class:`~agentd.sandbox.snapshots.
SnapshotStore` (under its home: fast, with the stat cache that makes a snapshot of an
unchanged workspace cost a walk). With ``[sandbox] snapshot_store`` other than
``local``, every snapshot is also copied, before its event is committed, to a
:class:`SnapshotObjects` every node reads: its manifest and the file contents it names
(each content-addressed blob once), and its *mark* (why its content is untrusted). A
node about to run an agent whose last committed workspace state it does not hold
fetches what it lacks from there into its own store, then restores from that.

The backends:

- ``local`` (:data:`None` here): nothing is copied; each node has its own snapshots
  (the default on SQLite, where there is one node).
- ``path`` (:class:`DirObjects`): a directory every node mounts (NFS, CephFS, ...).
- ``store`` (:class:`StoreObjects`): tables of the database itself (chunks of 1 MiB),
  so that a PostgreSQL cluster needs nothing else; the default on PostgreSQL.

Every object is kept under a *scope*, the agent's tenant: one tenant's snapshots are
never found, read or deduplicated against another's (a content-addressed store shared
by tenants would tell one of them, by what it did not have to upload, that another
holds a file with the same bytes). Every object read is checked against its name as it
is streamed; a missing or damaged one raises :class:`ObjectMissing` or
:class:`ObjectCorrupt`, before anything of the workspace is touched.

Collecting (:meth:`SnapshotObjects.collect`): what no session's log refers to, and no
snapshot used within the grace period names, is removed. A snapshot that finds an
object already stored marks it used (:meth:`SnapshotObjects.present`), so the
collector cannot remove it between that moment and its event's commit.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import logging
import os
import re
import secrets
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from agentd.errors import InvalidInput, StoreError
from agentd.sandbox.snapshots import (
    SnapshotStore,
    is_manifest,
    manifest_objects,
    parse_manifest,
)

if TYPE_CHECKING:
    from agentd.store import Store

__all__ = ["DirObjects", "ObjectCorrupt", "ObjectMissing", "SnapshotObjects", "StoreObjects",
           "check_scope", "pull_manifest", "pull_snapshot", "push_snapshot"]

log = logging.getLogger(__name__)

_HEX64 = re.compile(r"[0-9a-f]{64}")
_SCOPE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_CHUNK = 1 << 20
#: Chunks per transaction when the store holds the objects (4 MiB a write).
_BATCH = 4


class ObjectMissing(StoreError):
    """An object a snapshot names is not in the shared snapshot store."""

    code = "snapshot_corrupt"


class ObjectCorrupt(StoreError):
    """An object in the shared snapshot store does not hash to its name."""

    code = "snapshot_corrupt"


def check_scope(scope: str) -> str:
    """A scope is a plain name (a tenant's): it names a directory of a shared path."""
    if not isinstance(scope, str) or not _SCOPE.fullmatch(scope) or scope in (".", ".."):
        raise InvalidInput(f"{scope!r} is not a snapshot scope (a tenant's name)",
                           field="scope")
    return scope


def _check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise InvalidInput(f"{digest!r} is not an object name (64 lowercase hex digits)",
                           field="digest")
    return digest


class SnapshotObjects(abc.ABC):
    """Content-addressed blobs (files' contents and snapshots' manifests) by scope, and
    the marks of the snapshots each agent took: what every node of a cluster reads.

    Args:
        grace_s: an object used (stored, or found stored by a snapshot) this recently
            is never collected; a snapshot's upload and its event's commit must take
            less (an hour by default).
    """

    #: ``path`` or ``store`` (``[sandbox] snapshot_store``).
    kind: str

    def __init__(self, *, grace_s: float = 3600.0) -> None:
        self.grace_s = grace_s

    @abc.abstractmethod
    async def present(self, scope: str, digests: Sequence[str]) -> set[str]:
        """Which of ``digests`` are stored under ``scope``; those found are marked used
        (the collector keeps them for ``grace_s``)."""

    @abc.abstractmethod
    async def put(self, scope: str, digest: str, source: Path, *,
                  manifest: bool = False) -> int:
        """Store the file ``source`` as object ``digest`` under ``scope`` (its content
        is checked against the name while read: :class:`ObjectCorrupt` and nothing
        stored if it does not match). Returns the bytes written (0: it was there)."""

    @abc.abstractmethod
    async def get(self, scope: str, digest: str, target: Path) -> int:
        """Write object ``digest`` of ``scope`` to the new file ``target``, checked as it
        is streamed (not synced: the caller keeps it durably or not); its size.
        :class:`ObjectMissing` when it is not stored, :class:`ObjectCorrupt` when it
        does not match its name (``target`` is then removed, and so is the damaged
        object: the next snapshot holding that content stores it again)."""

    @abc.abstractmethod
    async def marks(self, agent_id: str, refs: Iterable[str]) -> dict[str, str]:
        """The marks of the agent's snapshots ``refs`` that have one (ref -> why its
        content is untrusted, "" when it is not)."""

    @abc.abstractmethod
    async def mark(self, agent_id: str, marks: Mapping[str, str]) -> None:
        """Record marks; a mark that says a snapshot is untrusted never goes back."""

    @abc.abstractmethod
    async def _inventory(self) -> dict[str, dict[str, tuple[float, bool]]]:
        """scope -> digest -> (last used, whether it is a complete manifest)."""

    @abc.abstractmethod
    async def _read(self, scope: str, digest: str) -> bytes:
        """A small object (a manifest), checked."""

    @abc.abstractmethod
    async def _delete(self, scope: str, digests: Sequence[str], unused_since: float) -> int:
        """Remove these objects unless used at or after ``unused_since``; how many went."""

    @abc.abstractmethod
    async def _forget_marks(self, keep: set[str], before: float) -> None:
        """Remove the marks of snapshots not in ``keep`` made before ``before``."""

    @abc.abstractmethod
    def _now(self) -> float:
        """The time ``used`` stamps are in."""

    async def collect(self, keep: Iterable[str]) -> int:
        """Remove every object no snapshot in ``keep`` (every ref some session's log
        refers to) names, unless used within ``grace_s``; how many went. Run by any
        node, as often as it likes: what it removes, no node can need."""
        refs = set(keep)
        cutoff = self._now() - self.grace_s
        removed = 0
        for scope, objects in (await self._inventory()).items():
            roots = [d for d, (used, manifest) in objects.items()
                     if manifest and (d in refs or used >= cutoff)]
            live = set(roots)
            for ref in roots:
                try:
                    live.update(manifest_objects(parse_manifest(
                        ref, await self._read(scope, ref))))
                except (StoreError, InvalidInput) as exc:
                    # What it names cannot be known: collect nothing of this scope.
                    log.warning("snapshot objects of %s not collected: %s", scope, exc)
                    break
            else:
                dead = [d for d, (used, _) in objects.items()
                        if d not in live and used < cutoff]
                if dead:
                    removed += await self._delete(scope, dead, cutoff)
        await self._forget_marks(refs, cutoff)
        if removed:
            log.info("removed %d shared snapshot object(s) no log refers to", removed)
        return removed


# --------------------------------------------------------------------------- copying

#: Objects copied at once between a node's store and the shared one.
_PARALLEL = 8


async def push_snapshot(local: SnapshotStore, shared: SnapshotObjects, scope: str,
                        ref: str) -> int:
    """Copy the snapshot ``ref`` of ``local`` to ``shared`` under ``scope``: the file
    contents it names that are not there yet, then its manifest (last: a manifest
    stored means its objects were). Returns the bytes written."""
    entries = await asyncio.to_thread(local.manifest, ref)
    objects = manifest_objects(entries)
    there = await shared.present(scope, [*objects, ref])
    if ref in there and all(d in there for d in objects):
        return 0
    limit = asyncio.Semaphore(_PARALLEL)

    async def one(digest: str) -> int:
        async with limit:
            return await shared.put(scope, digest, local.object_file(digest))

    written = sum(await _each([one(d) for d in objects if d not in there]))
    if ref not in there:
        written += await shared.put(scope, ref, local.object_file(ref), manifest=True)
    return written


async def pull_snapshot(local: SnapshotStore, shared: SnapshotObjects, scope: str,
                        ref: str) -> int:
    """Fetch into ``local`` what it lacks of the snapshot ``ref`` (under ``scope`` in
    ``shared``): its manifest first (a fresh manifest keeps what it names from the
    local collector), then the file contents, all checked before any is kept (then
    kept together, durably). :class:`ObjectMissing` or :class:`ObjectCorrupt` leave
    the workspace untouched: nothing is restored yet. Returns the bytes fetched."""
    fetched = 0
    if not await asyncio.to_thread(local.has_object, ref):
        fetched += await _fetch(local, shared, scope, ref)
    entries = await asyncio.to_thread(local.manifest, ref)

    def lacking() -> list[str]:
        return [d for d in manifest_objects(entries) if not local.has_object(d)]

    wanted = await asyncio.to_thread(lacking)
    limit = asyncio.Semaphore(_PARALLEL)
    parts: list[tuple[str, Path]] = []

    async def one(digest: str) -> int:
        async with limit:
            part = await asyncio.to_thread(local.incoming)
            parts.append((digest, part))
            return await shared.get(scope, digest, part)

    try:
        fetched += sum(await _each([one(d) for d in wanted]))
        await asyncio.to_thread(local.adopt, parts)
    except BaseException:
        await asyncio.to_thread(_discard, [p for _, p in parts])
        raise
    return fetched


def _discard(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


async def _each(jobs: list[Coroutine[Any, Any, int]]) -> list[int]:
    """Run the jobs at once; the first error is raised once the others are cancelled
    (none is left running behind it)."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(job) for job in jobs]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


async def pull_manifest(local: SnapshotStore, shared: SnapshotObjects, scope: str,
                        ref: str) -> None:
    """Fetch only the manifest of snapshot ``ref`` (enough to list its files)."""
    if not await asyncio.to_thread(local.has_object, ref):
        await _fetch(local, shared, scope, ref)


async def _fetch(local: SnapshotStore, shared: SnapshotObjects, scope: str,
                 digest: str) -> int:
    part = await asyncio.to_thread(local.incoming)
    try:
        size = await shared.get(scope, digest, part)
        await asyncio.to_thread(local.adopt, [(digest, part)])
    except BaseException:
        await asyncio.to_thread(part.unlink, missing_ok=True)
        raise
    return size


# --------------------------------------------------------------------------- a shared path


class DirObjects(SnapshotObjects):
    """Objects in a directory every node mounts: ``<root>/<scope>/objects/ab/cdef...``,
    marks in ``<root>/marks/<agent id>/<ref>`` (the file holds why; empty: trusted).

    Each object is written to ``<root>/<scope>/tmp/`` and renamed into place (complete
    or absent); ``used`` is its modification time, refreshed by :meth:`present`. A
    mark is created exclusively and only ever replaced by a taint, so two nodes marking
    at once cannot lose one. Every node must reach the directory as the same user.
    """

    kind = "path"

    def __init__(self, root: Path, *, grace_s: float = 3600.0) -> None:
        super().__init__(grace_s=grace_s)
        self.root = root

    def _path(self, scope: str, digest: str) -> Path:
        return self.root / check_scope(scope) / "objects" / digest[:2] / digest[2:]

    def _now(self) -> float:
        return time.time()

    async def present(self, scope: str, digests: Sequence[str]) -> set[str]:
        wanted = [_check_digest(d) for d in dict.fromkeys(digests)]
        refresh = self._now() - self.grace_s / 2

        def work() -> set[str]:
            found: set[str] = set()
            for digest in wanted:
                path = self._path(scope, digest)
                try:
                    if path.stat().st_mtime < refresh:
                        os.utime(path)  # (raises if the collector took it meanwhile)
                except FileNotFoundError:
                    continue
                found.add(digest)
            return found

        return await asyncio.to_thread(work)

    async def put(self, scope: str, digest: str, source: Path, *,
                  manifest: bool = False) -> int:
        target = self._path(scope, _check_digest(digest))
        return await asyncio.to_thread(self._put, target, digest, source)

    def _put(self, target: Path, digest: str, source: Path) -> int:
        if target.exists():
            with contextlib.suppress(OSError):
                os.utime(target)
            return 0
        tmp = target.parents[2] / "tmp"
        tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = tmp / f"{secrets.token_hex(12)}.tmp"
        try:
            size = _copy_checked(source, temp, digest, missing=None)
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.replace(temp, target)
            _fsync_dir(target.parent)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return size

    async def get(self, scope: str, digest: str, target: Path) -> int:
        source = self._path(scope, _check_digest(digest))
        try:
            return await asyncio.to_thread(_copy_checked, source, target, digest,
                                           missing=f"{scope}/{digest}", sync=False)
        except ObjectCorrupt:
            await asyncio.to_thread(source.unlink, missing_ok=True)
            _dropped(scope, digest)
            raise

    async def marks(self, agent_id: str, refs: Iterable[str]) -> dict[str, str]:
        folder = self.root / "marks" / check_scope(agent_id)
        wanted = [_check_digest(r) for r in dict.fromkeys(refs)]

        def work() -> dict[str, str]:
            found: dict[str, str] = {}
            for ref in wanted:
                try:
                    found[ref] = (folder / ref).read_text()
                except FileNotFoundError:
                    continue
            return found

        return await asyncio.to_thread(work)

    async def mark(self, agent_id: str, marks: Mapping[str, str]) -> None:
        folder = self.root / "marks" / check_scope(agent_id)
        items = [(_check_digest(ref), why) for ref, why in sorted(marks.items())]
        await asyncio.to_thread(self._mark, folder, items)

    @staticmethod
    def _mark(folder: Path, items: list[tuple[str, str]]) -> None:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        for ref, why in items:
            path = folder / ref
            temp = folder / f".{ref}.{secrets.token_hex(6)}.tmp"
            temp.write_text(why)
            try:
                if why:
                    # A taint replaces whatever is there (a trusted mark, or a taint).
                    os.replace(temp, path)
                else:
                    # A trusted mark is made only where there is none: never over a
                    # taint another node wrote meanwhile.
                    with contextlib.suppress(FileExistsError):
                        os.link(temp, path)
            finally:
                temp.unlink(missing_ok=True)

    async def _inventory(self) -> dict[str, dict[str, tuple[float, bool]]]:
        def work() -> dict[str, dict[str, tuple[float, bool]]]:
            found: dict[str, dict[str, tuple[float, bool]]] = {}
            if not self.root.is_dir():
                return found
            for scope_dir in sorted(self.root.iterdir()):
                objects = scope_dir / "objects"
                if scope_dir.name == "marks" or not objects.is_dir():
                    continue
                mine = found.setdefault(scope_dir.name, {})
                for fan in objects.iterdir():
                    for item in fan.iterdir():
                        digest = fan.name + item.name
                        if not _HEX64.fullmatch(digest):
                            continue
                        try:
                            used = item.stat().st_mtime
                            with open(item, "rb") as handle:
                                manifest = is_manifest(handle.read(32))
                        except OSError:
                            continue
                        mine[digest] = (used, manifest)
            return found

        return await asyncio.to_thread(work)

    async def _read(self, scope: str, digest: str) -> bytes:
        def work() -> bytes:
            try:
                data = self._path(scope, digest).read_bytes()
            except FileNotFoundError:
                raise ObjectMissing(f"snapshot object {scope}/{digest} is missing from "
                                    "the shared snapshot store") from None
            if hashlib.sha256(data).hexdigest() != digest:
                raise ObjectCorrupt(f"snapshot object {scope}/{digest} in the shared "
                                    "snapshot store is damaged")
            return data

        return await asyncio.to_thread(work)

    async def _delete(self, scope: str, digests: Sequence[str], unused_since: float) -> int:
        def work() -> int:
            gone = 0
            trash = self.root / check_scope(scope) / "tmp"
            trash.mkdir(parents=True, exist_ok=True, mode=0o700)
            for digest in digests:
                path = self._path(scope, digest)
                # Moved aside first (a rename is atomic), then looked at again: a
                # snapshot that marked it used just before is given it back.
                aside = trash / f"{digest}.{secrets.token_hex(4)}.gc"
                try:
                    os.rename(path, aside)
                except FileNotFoundError:
                    continue
                if aside.stat().st_mtime >= unused_since:
                    with contextlib.suppress(OSError):
                        os.link(aside, path)
                    aside.unlink(missing_ok=True)
                    continue
                aside.unlink(missing_ok=True)
                gone += 1
            return gone

        return await asyncio.to_thread(work)

    async def _forget_marks(self, keep: set[str], before: float) -> None:
        def work() -> None:
            folder = self.root / "marks"
            if not folder.is_dir():
                return
            for agent in folder.iterdir():
                for mark in agent.iterdir():
                    with contextlib.suppress(OSError):
                        if mark.name not in keep and mark.stat().st_mtime < before:
                            mark.unlink()

        await asyncio.to_thread(work)


def _dropped(scope: str, digest: str) -> None:
    log.warning("snapshot object %s/%s in the shared snapshot store was damaged: removed "
                "(the next snapshot holding its content stores it again)", scope, digest)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_checked(source: Path, target: Path, digest: str, *, missing: str | None,
                  sync: bool = True) -> int:
    """Copy ``source`` to the new file ``target`` (fsynced with ``sync``), checking that
    its content hashes to ``digest``. ``missing``: the object's name when ``source`` is
    the shared store's (its absence is :class:`ObjectMissing`; else it is the local
    object, whose absence is an OSError)."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if missing is None:
            raise
        raise ObjectMissing(f"snapshot object {missing} is missing from the shared "
                            "snapshot store") from None
    try:
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o400)
        try:
            check = hashlib.sha256()
            size = 0
            while chunk := os.read(fd, _CHUNK):
                check.update(chunk)
                size += len(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view):]
            if sync:
                os.fsync(out)
        finally:
            os.close(out)
    finally:
        os.close(fd)
    if check.hexdigest() != digest:
        target.unlink(missing_ok=True)
        where = (f"snapshot object {missing} in the shared snapshot store" if missing
                 else f"local snapshot object {digest}")
        raise ObjectCorrupt(f"{where} is damaged: its content does not match its name")
    return size


# --------------------------------------------------------------------------- the store


class StoreObjects(SnapshotObjects):
    """Objects in the database (:mod:`agentd.store._snapshot_store`): each in chunks of
    1 MiB, written a few per transaction and counted as stored once the last is; marks
    in their own table. Reads and writes go through the store's engine, off the loop."""

    kind = "store"

    def __init__(self, store: Store, *, grace_s: float = 3600.0) -> None:
        super().__init__(grace_s=grace_s)
        self.store = store

    def _now(self) -> float:
        return self.store.clock.time()

    async def present(self, scope: str, digests: Sequence[str]) -> set[str]:
        wanted = [_check_digest(d) for d in dict.fromkeys(digests)]
        return await self.store.snapshot_objects_present(
            check_scope(scope), wanted, refresh_before=self._now() - self.grace_s / 2)

    async def put(self, scope: str, digest: str, source: Path, *,
                  manifest: bool = False) -> int:
        check_scope(scope)
        _check_digest(digest)
        size = (await asyncio.to_thread(os.stat, source)).st_size
        chunks = -(-size // _CHUNK)
        if not await self.store.begin_snapshot_object(scope, digest, size=size,
                                                      chunks=chunks, manifest=manifest):
            return 0
        check = hashlib.sha256()
        n = 0
        handle = await asyncio.to_thread(open, source, "rb")
        with handle:  # (its reads leave the loop below)
            while True:
                batch = await asyncio.to_thread(_read_chunks, handle, _BATCH)
                for part in batch:
                    check.update(part)
                if batch:
                    await self.store.put_snapshot_chunks(scope, digest, n, batch)
                n += len(batch)
                if len(batch) < _BATCH:
                    break
        if check.hexdigest() != digest or n != chunks:
            raise ObjectCorrupt(f"local snapshot object {digest} is damaged: its content "
                                "does not match its name")
        await self.store.finish_snapshot_object(scope, digest)
        return size

    async def get(self, scope: str, digest: str, target: Path) -> int:
        check_scope(scope)
        _check_digest(digest)
        try:
            return await self._get(scope, digest, target)
        except ObjectCorrupt:
            await self.store.delete_snapshot_objects(scope, [digest],
                                                     unused_since=float("inf"))
            _dropped(scope, digest)
            raise

    async def _get(self, scope: str, digest: str, target: Path) -> int:
        # The object's row and its first chunks in one query; the rest, if any, after.
        info, rows = await self.store.snapshot_object_start(scope, digest, _BATCH)
        if info is None:
            raise ObjectMissing(f"snapshot object {scope}/{digest} is missing from the "
                                "shared snapshot store")
        check = hashlib.sha256()
        size = 0
        out = await asyncio.to_thread(
            os.open, target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o400)
        try:
            for first in range(0, info.chunks, _BATCH):
                count = min(_BATCH, info.chunks - first)
                if first:
                    rows = await self.store.snapshot_chunks(scope, digest, first, count)
                if [n for n, _ in rows] != list(range(first, first + count)):
                    raise ObjectCorrupt(f"snapshot object {scope}/{digest} in the shared "
                                        "snapshot store misses some of its chunks")
                parts = [data for _, data in rows]
                for part in parts:
                    check.update(part)
                    size += len(part)
                await asyncio.to_thread(_write_parts, out, parts)
        except BaseException:
            os.close(out)
            await asyncio.to_thread(target.unlink, missing_ok=True)
            raise
        os.close(out)
        if check.hexdigest() != digest or size != info.size:
            await asyncio.to_thread(target.unlink, missing_ok=True)
            raise ObjectCorrupt(f"snapshot object {scope}/{digest} in the shared snapshot "
                                "store is damaged: its content does not match its name")
        return size

    async def marks(self, agent_id: str, refs: Iterable[str]) -> dict[str, str]:
        return await self.store.snapshot_marks(agent_id, [_check_digest(r) for r in refs])

    async def mark(self, agent_id: str, marks: Mapping[str, str]) -> None:
        for ref in marks:
            _check_digest(ref)
        await self.store.mark_snapshots(agent_id, marks)

    async def _inventory(self) -> dict[str, dict[str, tuple[float, bool]]]:
        found: dict[str, dict[str, tuple[float, bool]]] = {}
        for scope, digest, manifest, used in await self.store.snapshot_object_rows():
            found.setdefault(scope, {})[digest] = (used, manifest)
        return found

    async def _read(self, scope: str, digest: str) -> bytes:
        info = await self.store.snapshot_object(scope, digest)
        if info is None:
            raise ObjectMissing(f"snapshot object {scope}/{digest} is missing from the "
                                "shared snapshot store")
        rows = await self.store.snapshot_chunks(scope, digest, 0, info.chunks)
        data = b"".join(part for _, part in rows)
        if len(rows) != info.chunks or hashlib.sha256(data).hexdigest() != digest:
            raise ObjectCorrupt(f"snapshot object {scope}/{digest} in the shared snapshot "
                                "store is damaged")
        return data

    async def _delete(self, scope: str, digests: Sequence[str], unused_since: float) -> int:
        return await self.store.delete_snapshot_objects(scope, digests,
                                                        unused_since=unused_since)

    async def _forget_marks(self, keep: set[str], before: float) -> None:
        await self.store.forget_snapshot_marks(keep, before=before)


def _read_chunks(handle: BinaryIO, count: int) -> list[bytes]:
    parts: list[bytes] = []
    for _ in range(count):
        part = handle.read(_CHUNK)
        if not part:
            break
        parts.append(part)
    return parts


def _write_parts(fd: int, parts: list[bytes]) -> None:
    for part in parts:
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view):]
