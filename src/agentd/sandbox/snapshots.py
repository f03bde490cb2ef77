"""Incremental, content-addressed snapshots of agent workspaces.

A snapshot is a *manifest*: canonical JSON (sorted keys, no spaces, ASCII) mapping each
relative path to ``{"type": "file", "size", "mode", "hash"}``, ``{"type": "dir",
"mode"}`` or ``{"type": "link", "target"}``. File contents and manifests are objects
named by their SHA-256 (``objects/ab/cdef...``), so identical files are stored once
across snapshots and agents, and a snapshot's ref is the hash of its manifest: the same
workspace content gives the same ref. Modification times are not part of a snapshot.

What makes it cheap:

- a stat cache per workspace (``cache/<cache_key>.json``): a file whose size, mtime,
  ctime and inode are those recorded when it was last hashed is not read again, unless
  its last change is too close to that scan to be trusted (the racy-git rule, see
  ``racy_margin_s``);
- a file that has to be hashed is read once: small ones into memory and written only if
  their object is new, larger ones copied to a temp object while hashed (chunked, never
  whole in memory);
- a restore compares before it writes: identical files (by the cache, or by hashing
  when the sizes match) are left alone, inode and all.

What makes it safe:

- nothing is followed: the walk and the restore work from directory descriptors with
  ``O_NOFOLLOW``; links are recorded and restored as links. A link that replaced a
  directory is removed and a real directory made in its place, so a restore cannot be
  steered outside the workspace. A restored file is written to a temp file in its
  directory and renamed over the old name, which replaces a link or a hard link rather
  than writing through it;
- objects are fsynced and renamed into place, and the directories holding them fsynced,
  before the manifest is written and before :meth:`SnapshotStore.snapshot` returns: a
  ref recorded after it returns never points at a missing object, and an object file is
  complete or absent (a crash leaves at most temp files in ``tmp/``, which :meth:`gc`
  deletes). A restore checks every object exists before it touches the workspace and
  verifies each one's hash as it streams it out.

Kept: regular files (content and permission bits ``0o777``; no set-id or sticky bits),
directories (with their mode, empty ones too) and symbolic links (their target
string). Skipped and reported: FIFOs, sockets, devices, and entries the daemon may not
read. Extended attributes are not kept; the files and directories that carry them are
reported (``SnapshotStats.xattrs``), so that the caller can refuse to vouch for them.
Hard links are restored as separate files.

Errors: a malformed ref is :class:`~agentd.errors.InvalidInput`; a well-formed ref with
no snapshot behind it is :class:`~agentd.errors.NotFound` (code
``snapshot_not_found``); a manifest or object that fails its hash check, or a snapshot
missing an object, is :class:`~agentd.errors.StoreError` (``snapshot_corrupt``); a
workspace over ``max_bytes`` or ``max_files`` is
:class:`~agentd.errors.PayloadTooLarge` (``workspace_too_large``), raised before any
object is written.

Concurrency: calls are thread-safe. Calls for one ``cache_key`` run one at a time;
different keys run in parallel; :meth:`~SnapshotStore.gc` waits for all of them and
holds them off. One process per store directory.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentd.errors import InvalidInput, NotFound, PayloadTooLarge, StoreError
from agentd.sandbox._objects import (
    DIR_FLAGS,
    FILE_FLAGS,
    HEX64,
    Budget,
    CacheEntry,
    CorruptObject,
    Objects,
    OverBudget,
    SharedLock,
    StatCache,
    has_xattrs,
    signature,
    sync_dirs,
)
from agentd.sandbox._restore import Node as _Node
from agentd.sandbox._restore import Restorer as _Restorer

__all__ = ["RestoreStats", "SnapshotStats", "SnapshotStore", "is_manifest", "manifest_objects",
           "parse_manifest"]

logger = logging.getLogger(__name__)

_FORMAT = 1
_MAGIC = b'{"agentd_snapshot":1,'
_MAX_DEPTH = 256
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_PERM = 0o777


@dataclass(frozen=True, kw_only=True)
class SnapshotStats:
    """What one :meth:`SnapshotStore.snapshot` found and did.

    ``files``/``bytes`` are the regular files in the snapshot; ``hashed_*`` what had to
    be read this time (0 for an unchanged workspace); ``new_*`` the file contents stored
    this time (the manifest object is not counted); ``skipped`` the relative paths left
    out (FIFOs, sockets, devices, unreadable entries); ``xattrs`` the files and
    directories carrying extended attributes, which a snapshot does not keep (LSM labels
    such as ``security.selinux`` aside). Both are what a later reader of the workspace
    could see and a snapshot cannot vouch for.
    """

    files: int
    bytes: int
    hashed_files: int
    hashed_bytes: int
    new_objects: int
    new_bytes: int
    skipped: list[str]
    duration_ms: float
    xattrs: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class RestoreStats:
    """What one :meth:`SnapshotStore.restore` did, counted in paths: ``written``
    (created, replaced, or mode changed) plus ``unchanged`` is the number of entries in
    the snapshot; ``removed`` counts every path deleted, nested ones included."""

    written: int
    removed: int
    unchanged: int
    duration_ms: float


@dataclass
class _Walk:
    """Phase one of a snapshot: every path stat'ed, nothing read yet."""

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    cache: dict[str, CacheEntry] = field(default_factory=dict)
    todo: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    xattrs: list[str] = field(default_factory=list)
    count: int = 0
    total: int = 0


@dataclass
class _Hashed:
    path: str
    digest: str
    size: int
    mode: int
    new: bool
    cache: CacheEntry | None
    dirty: set[Path]
    xattrs: bool = False


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def _valid_name(name: str) -> bool:
    return name not in ("", ".", "..") and "\x00" not in name and "/" not in name


def _corrupt(message: str) -> StoreError:
    return StoreError(message, code="snapshot_corrupt")


class SnapshotStore:
    """Snapshots of workspaces, stored under ``root`` (e.g. ``$AGENTD_HOME/snapshots``).

    Args:
        root: the store's directory (created on first write).
        max_bytes: a workspace whose regular files add up to more is refused.
        max_files: a workspace with more entries (files, directories, links) is refused.
        racy_margin_s: a cached stat is trusted only if the file's last change (ctime)
            is at least this much older than the scan that recorded it. It must exceed
            the file system's timestamp granularity plus the kernel's coarse-clock lag
            (a tick); the cost of a large margin is that files changed shortly before a
            snapshot are hashed once more by the next one.
        workers: threads hashing and storing changed files (default: up to 4).
    """

    def __init__(self, root: Path, *, max_bytes: int = 2 << 30, max_files: int = 1_000_000,
                 racy_margin_s: float = 1.0, workers: int | None = None) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.racy_margin_ns = int(racy_margin_s * 1e9)
        self.workers = workers if workers is not None else min(4, os.cpu_count() or 1)
        self._objects = Objects(root)
        self._lock = SharedLock()
        self._keys: dict[str, threading.Lock] = {}
        self._keys_lock = threading.Lock()

    # -- public ------------------------------------------------------------------------

    def snapshot(self, workspace: Path, *, cache_key: str, budget: int | None = None
                 ) -> tuple[str, SnapshotStats]:
        """Snapshot ``workspace`` (a missing one is empty); returns its ref and stats.

        ``budget``: at most this many bytes of new file content may be stored (content
        already in the store costs nothing); over it, the snapshot is not taken.

        Raises:
            InvalidInput: ``cache_key`` is not a plain name, or ``workspace`` is a link
                or not a directory, or is nested deeper than 256 levels.
            PayloadTooLarge: over ``max_bytes`` or ``max_files`` (nothing is stored;
                code ``workspace_too_large``), or over ``budget`` (code
                ``snapshot_budget_exceeded``; objects stored before it was hit are left
                for :meth:`gc`).
        """
        started = time.perf_counter()
        cache_path = self._cache_path(cache_key)
        with self._key_lock(cache_key), self._lock.shared():
            cache = StatCache.load(cache_path)
            scanned_ns = time.time_ns()
            root_fd = self._open_workspace(workspace, create=False)
            try:
                walk = _Walk()
                if root_fd is not None:
                    if has_xattrs(root_fd):
                        walk.xattrs.append(".")
                    self._walk(root_fd, "", 0, cache, walk)
                spend = Budget(budget) if budget is not None else None
                try:
                    hashed = self._hash_all(root_fd, walk, spend) if walk.todo else []
                except OverBudget:
                    assert budget is not None
                    raise PayloadTooLarge(
                        f"the workspace's changed files do not fit in the agent's "
                        f"snapshot budget ({budget} bytes left)",
                        code="snapshot_budget_exceeded",
                        details={"budget_bytes": budget}) from None
            finally:
                if root_fd is not None:
                    os.close(root_fd)
            dirty: set[Path] = set()
            new: dict[str, int] = {}
            for item in hashed:
                walk.entries[item.path] = {"type": "file", "size": item.size,
                                           "mode": item.mode, "hash": item.digest}
                if item.cache is not None:
                    walk.cache[item.path] = item.cache
                if item.new:
                    new[item.digest] = item.size
                if item.xattrs:
                    walk.xattrs.append(item.path)
                dirty |= item.dirty
            sync_dirs(dirty)  # every object durable before the manifest names it
            data = json.dumps({"agentd_snapshot": _FORMAT, "entries": walk.entries},
                              sort_keys=True, separators=(",", ":")).encode("ascii")
            manifest_dirty: set[Path] = set()
            stored = self._objects.put_bytes(data, manifest_dirty)
            if not stored.new:
                self._objects.freshen(stored.digest)
            sync_dirs(manifest_dirty)
            if walk.todo or walk.cache != cache.entries:
                StatCache(walk.cache, scanned_ns).save(cache_path)
        files = [e for e in walk.entries.values() if e["type"] == "file"]
        stats = SnapshotStats(
            files=len(files), bytes=sum(e["size"] for e in files),
            hashed_files=len(hashed), hashed_bytes=sum(h.size for h in hashed),
            new_objects=len(new), new_bytes=sum(new.values()),
            skipped=sorted(walk.skipped), duration_ms=_ms(started),
            xattrs=sorted(walk.xattrs))
        logger.debug("snapshot %s of %s: %s", stored.digest, cache_key, stats)
        return stored.digest, stats

    def restore(self, ref: str, workspace: Path, *, cache_key: str | None = None
                ) -> RestoreStats:
        """Make ``workspace`` exactly the snapshot ``ref``: remove what it does not hold,
        write what differs, leave identical entries alone.

        With ``cache_key`` (the key snapshots of this workspace use) unchanged files are
        recognised by the stat cache, and the cache is updated for the next snapshot;
        without it, a file of the right size is hashed to find out. Not atomic as a
        whole: each file is replaced atomically, and an error part-way leaves a mix.

        Raises:
            InvalidInput: a malformed ref or cache key, or ``workspace`` is a link or
                not a directory.
            NotFound: no snapshot ``ref`` (code ``snapshot_not_found``).
            StoreError: the snapshot is damaged or misses an object
                (``snapshot_corrupt``).
        """
        started = time.perf_counter()
        cache_path = self._cache_path(cache_key) if cache_key is not None else None
        key_lock: AbstractContextManager[Any] = (
            self._key_lock(cache_key) if cache_key is not None else nullcontext())
        with key_lock, self._lock.shared():
            tree = self._tree(ref, self._load(ref))
            cache = StatCache.load(cache_path) if cache_path is not None else None
            started_ns = time.time_ns()
            restorer = _Restorer(self._objects, cache, self.racy_margin_ns)
            root_fd = self._open_workspace(workspace, create=True)
            assert root_fd is not None
            try:
                restorer.directory(root_fd, "", tree)
            except CorruptObject as exc:
                raise _corrupt(f"snapshot {ref} has a damaged object {exc}") from None
            finally:
                os.close(root_fd)
            if cache_path is not None:
                StatCache(restorer.cache, started_ns).save(cache_path)
        stats = RestoreStats(written=restorer.written, removed=restorer.removed,
                             unchanged=restorer.unchanged, duration_ms=_ms(started))
        logger.debug("restore %s into %s: %s", ref, workspace, stats)
        return stats

    def exists(self, ref: str) -> bool:
        """Whether ``ref`` names a stored snapshot (a malformed ref does not)."""
        if not isinstance(ref, str) or not HEX64.fullmatch(ref):
            return False
        try:
            with open(self._objects.path(ref), "rb") as handle:
                return handle.read(len(_MAGIC)) == _MAGIC
        except OSError:
            return False

    def manifest(self, ref: str) -> dict[str, Any]:
        """The snapshot's entries: relative path -> ``{type, size, mode, hash}`` for a
        file, ``{type, mode}`` for a directory, ``{type, target}`` for a link."""
        return self._load(ref)

    # -- objects, for copying snapshots to and from another store ----------------------

    def has_object(self, digest: str) -> bool:
        """Whether the object ``digest`` (a manifest or a file's content) is here."""
        return bool(HEX64.fullmatch(digest)) and self._objects.has(digest)

    def object_file(self, digest: str) -> Path:
        """Where the object ``digest`` is stored (to read it: it may be missing)."""
        if not HEX64.fullmatch(digest):
            raise InvalidInput(f"{digest!r} is not an object name", field="digest")
        return self._objects.path(digest)

    def incoming(self) -> Path:
        """A new path for an object being fetched from elsewhere (then :meth:`adopt`
        it). Kept apart from ``tmp/``, which :meth:`gc` empties whenever it runs."""
        folder = self.root / "incoming"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return folder / f"{secrets.token_hex(12)}.part"

    def adopt(self, files: Iterable[tuple[str, Path]]) -> None:
        """Make each complete, verified file (from :meth:`incoming`) the object its
        digest names, durably (each file synced, then each directory once). An object
        already here is kept and its file removed."""
        items = list(files)
        for digest, _ in items:
            if not HEX64.fullmatch(digest):
                raise InvalidInput(f"{digest!r} is not an object name", field="digest")
        with self._lock.shared():
            dirty: set[Path] = set()
            for digest, path in items:
                if self._objects.has(digest):
                    path.unlink(missing_ok=True)
                    self._objects.freshen(digest)
                    continue
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self._objects.publish(path, digest, dirty)
            sync_dirs(dirty)

    def _clear_incoming(self, before: float) -> None:
        """Remove fetches a crash left behind (older than ``before``)."""
        folder = self.root / "incoming"
        if not folder.is_dir():
            return
        for leftover in folder.glob("*.part"):
            with suppress(OSError):
                if leftover.stat().st_mtime < before:
                    leftover.unlink()

    def gc(self, keep: Iterable[str], *, min_age_s: float = 0.0) -> int:
        """Delete every object (file content or manifest) not reachable from the
        snapshots in ``keep``; returns how many objects went. Leftover temp files go too.

        ``keep`` must name every snapshot still wanted, including refs returned by
        :meth:`snapshot` but not yet recorded anywhere; ``min_age_s`` > 0 also keeps
        every snapshot taken (or taken again) in the last ``min_age_s`` seconds, which
        covers that window. Refs in ``keep`` that are malformed or unknown are logged and
        ignored. Stat caches forget entries whose objects are deleted (before they are),
        so the next snapshot stores those contents again.
        """
        with self._lock.exclusive():
            roots = list(dict.fromkeys(keep))
            if min_age_s > 0:
                roots.extend(self._recent_manifests(time.time() - min_age_s))
            live: set[str] = set()
            for ref in roots:
                try:
                    entries = self._load(ref)
                except InvalidInput as exc:
                    logger.warning("gc: ignoring %r: %s", ref, exc)
                    continue
                except NotFound:
                    # (In a cluster, most refs in the logs were taken on other nodes.)
                    logger.debug("gc: no snapshot %s here", ref)
                    continue
                except StoreError as exc:
                    # Kept for inspection; what it referenced cannot be known.
                    logger.warning("gc: %s", exc)
                    live.add(ref)
                    continue
                live.add(ref)
                live.update(e["hash"] for e in entries.values() if e["type"] == "file")
            cache_dir = self.root / "cache"
            if cache_dir.is_dir():
                for path in sorted(cache_dir.glob("*.json")):
                    cache = StatCache.load(path)
                    kept = {k: v for k, v in cache.entries.items() if v[4] in live}
                    if len(kept) != len(cache.entries):
                        StatCache(kept, cache.scanned_ns).save(path, durable=True)
            removed = 0
            for digest, path in list(self._objects.all()):
                if digest not in live:
                    path.unlink(missing_ok=True)
                    removed += 1
            for directory, pattern in ((self._objects.tmp, "*"), (cache_dir, ".*.tmp")):
                if directory.is_dir():
                    for leftover in directory.glob(pattern):
                        leftover.unlink(missing_ok=True)
            self._clear_incoming(time.time() - max(min_age_s, 3600.0))
        logger.info("gc: kept %d objects, removed %d", len(live), removed)
        return removed

    # -- snapshot ----------------------------------------------------------------------

    def _walk(self, fd: int, prefix: str, depth: int, cache: StatCache, walk: _Walk) -> None:
        if depth >= _MAX_DEPTH:
            raise InvalidInput(f"the workspace is nested deeper than {_MAX_DEPTH} levels "
                               f"(at {prefix[:-1]!r})")
        with os.scandir(fd) as listing:
            items = list(listing)
        for item in items:
            path = prefix + item.name
            try:
                info = item.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            walk.count += 1
            if walk.count > self.max_files:
                raise self._too_large(f"more than {self.max_files} entries")
            mode = info.st_mode
            if stat.S_ISREG(mode):
                walk.total += info.st_size
                if walk.total > self.max_bytes:
                    raise self._too_large(f"more than {self.max_bytes} bytes")
                digest = cache.trusted(path, info, self.racy_margin_ns)
                if digest is None:
                    walk.todo.append(path)
                    continue
                walk.entries[path] = {"type": "file", "size": info.st_size,
                                      "mode": stat.S_IMODE(mode) & _PERM, "hash": digest}
                walk.cache[path] = (*signature(info), digest)
            elif stat.S_ISDIR(mode):
                try:
                    sub = os.open(item.name, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    continue
                except OSError:  # unreadable, or swapped for a link since the stat
                    walk.skipped.append(path)
                    continue
                try:
                    walk.entries[path] = {"type": "dir", "mode": stat.S_IMODE(mode) & _PERM}
                    if has_xattrs(sub):
                        walk.xattrs.append(path)
                    self._walk(sub, path + "/", depth + 1, cache, walk)
                finally:
                    os.close(sub)
            elif stat.S_ISLNK(mode):
                try:
                    target = os.readlink(item.name, dir_fd=fd)
                except FileNotFoundError:
                    continue
                except OSError:
                    walk.skipped.append(path)
                    continue
                walk.entries[path] = {"type": "link", "target": target}
            else:
                walk.skipped.append(path)

    def _too_large(self, what: str) -> PayloadTooLarge:
        return PayloadTooLarge(f"the workspace holds {what}: too large to snapshot",
                               code="workspace_too_large",
                               details={"max_bytes": self.max_bytes,
                                        "max_files": self.max_files})

    def _hash_all(self, root_fd: int | None, walk: _Walk, budget: Budget | None
                  ) -> list[_Hashed]:
        assert root_fd is not None

        def one(path: str) -> _Hashed | None:
            try:
                return self._hash_one(root_fd, path, budget)
            except FileNotFoundError:
                return None  # gone since the walk
            except (PermissionError, _NotRegular):
                walk.skipped.append(path)
                return None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
                    walk.skipped.append(path)  # replaced by a link or a special file
                    return None
                raise

        workers = min(self.workers, len(walk.todo))
        if workers <= 1:
            results = [one(path) for path in walk.todo]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="agentd-snapshot") as pool:
                results = list(pool.map(one, walk.todo))
        return [r for r in results if r is not None]

    def _hash_one(self, root_fd: int, path: str, budget: Budget | None) -> _Hashed:
        parts = path.split("/")
        with ExitStack() as stack:
            dir_fd = root_fd
            for part in parts[:-1]:
                dir_fd = os.open(part, DIR_FLAGS, dir_fd=dir_fd)
                stack.callback(os.close, dir_fd)
            fd = os.open(parts[-1], FILE_FLAGS, dir_fd=dir_fd)
            stack.callback(os.close, fd)
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                raise _NotRegular(path)
            dirty: set[Path] = set()
            stored = self._objects.ingest(fd, dirty,
                                          budget.reserve if budget is not None else None)
            after = os.fstat(fd)
            # Setting an attribute moves ctime, so a cached file that gains one is read
            # again; one that has one is never cached, so it is looked at every time.
            xattrs = has_xattrs(fd)
        # Changed while being read: the content stored is whatever was read, but the
        # cache must not vouch for it.
        stable = (signature(before)[:3] == signature(after)[:3]
                  and stored.size == before.st_size and not xattrs)
        return _Hashed(path=path, digest=stored.digest, size=stored.size,
                       mode=stat.S_IMODE(before.st_mode) & _PERM, new=stored.new,
                       cache=(*signature(before), stored.digest) if stable else None,
                       dirty=dirty, xattrs=xattrs)

    # -- manifests ---------------------------------------------------------------------

    def _load(self, ref: str) -> dict[str, Any]:
        _check_ref(ref)
        try:
            data = self._objects.read(ref)
        except FileNotFoundError:
            raise NotFound(f"no snapshot {ref}", code="snapshot_not_found") from None
        except CorruptObject:
            raise _corrupt(f"snapshot {ref} is damaged: its content does not match its "
                           "hash") from None
        return parse_manifest(ref, data)

    def _tree(self, ref: str, entries: dict[str, Any]) -> dict[str, _Node]:
        root: dict[str, _Node] = {}
        nodes: dict[str, _Node] = {}
        for path in sorted(entries, key=lambda p: p.count("/")):
            parent, _, name = path.rpartition("/")
            if not parent:
                siblings = root
            elif parent in nodes and nodes[parent].entry["type"] == "dir":
                siblings = nodes[parent].children
            else:
                raise _corrupt(f"snapshot {ref} lists {path!r} without its directory")
            node = nodes[path] = _Node(entries[path])
            siblings[name] = node
        missing = sorted({e["hash"] for e in entries.values() if e["type"] == "file"
                          and not self._objects.has(e["hash"])})
        if missing:
            raise _corrupt(f"snapshot {ref} misses {len(missing)} object(s), e.g. "
                           f"{missing[0]}")
        return root

    def _recent_manifests(self, cutoff: float) -> Iterator[str]:
        for digest, path in self._objects.all():
            try:
                if path.stat().st_mtime < cutoff:
                    continue
                with open(path, "rb") as handle:
                    if handle.read(len(_MAGIC)) == _MAGIC:
                        yield digest
            except OSError:
                continue

    # -- helpers -----------------------------------------------------------------------

    def _cache_path(self, cache_key: str) -> Path:
        if not isinstance(cache_key, str) or not _KEY.fullmatch(cache_key):
            raise InvalidInput(f"{cache_key!r} is not a valid cache key (letters, digits, "
                               "'.', '_', '-'; at most 128)", field="cache_key")
        return self.root / "cache" / f"{cache_key}.json"

    def _key_lock(self, cache_key: str) -> threading.Lock:
        with self._keys_lock:
            return self._keys.setdefault(cache_key, threading.Lock())

    @staticmethod
    def _open_workspace(workspace: Path, *, create: bool) -> int | None:
        if create:
            try:
                workspace.mkdir(parents=True, exist_ok=True, mode=0o700)
            except FileExistsError:
                raise InvalidInput(f"workspace {workspace} is not a directory",
                                   field="workspace") from None
        try:
            return os.open(workspace, DIR_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            what = "a symbolic link" if workspace.is_symlink() else "not a directory"
            raise InvalidInput(f"workspace {workspace} is {what}", field="workspace"
                               ) from None


class _NotRegular(Exception):
    pass


def _check_ref(ref: str) -> None:
    if not isinstance(ref, str) or not HEX64.fullmatch(ref):
        raise InvalidInput(f"{ref!r} is not a snapshot ref (64 lowercase hex digits)",
                           field="ref")


def is_manifest(data: bytes) -> bool:
    """Whether an object's content is a snapshot's manifest (not a file's content)."""
    return data.startswith(_MAGIC)


def parse_manifest(ref: str, data: bytes) -> dict[str, Any]:
    """The entries of the manifest ``data`` (the content of object ``ref``, whose hash
    the caller has checked): path -> entry, each entry checked.

    Raises:
        NotFound: ``data`` is file content, not a manifest (``snapshot_not_found``).
        StoreError: not a valid manifest (``snapshot_corrupt``).
    """
    if not is_manifest(data):
        raise NotFound(f"no snapshot {ref} (that object is file content)",
                       code="snapshot_not_found")
    try:
        raw = json.loads(data)
        entries = raw["entries"]
        if not isinstance(entries, dict):
            raise TypeError("entries is not an object")
        for path, entry in entries.items():
            _check_entry(path, entry)
    except (ValueError, KeyError, TypeError) as exc:
        raise _corrupt(f"snapshot {ref} is not a valid manifest: {exc}") from None
    return entries


def manifest_objects(entries: dict[str, Any]) -> dict[str, int]:
    """The file contents a manifest's entries name: digest -> size."""
    return {e["hash"]: e["size"] for e in entries.values() if e["type"] == "file"}


def _check_entry(path: str, entry: Any) -> None:
    if not isinstance(path, str) or not all(_valid_name(p) for p in path.split("/")):
        raise ValueError(f"bad path {path!r}")
    if not isinstance(entry, dict):
        raise TypeError(f"{path!r}: entry is not an object")
    kind = entry.get("type")
    if kind == "link":
        target = entry.get("target")
        if not isinstance(target, str) or not target or "\x00" in target:
            raise ValueError(f"{path!r}: bad link target")
        return
    mode = entry.get("mode")
    if kind not in ("file", "dir") or type(mode) is not int or not 0 <= mode <= _PERM:
        raise ValueError(f"{path!r}: bad type or mode")
    if kind == "file":
        size = entry.get("size")
        if type(size) is not int or size < 0 or not HEX64.fullmatch(entry.get("hash", "")):
            raise ValueError(f"{path!r}: bad size or hash")
