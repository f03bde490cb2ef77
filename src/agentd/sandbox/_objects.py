"""The machinery under :mod:`agentd.sandbox.snapshots`: the content-addressed object
directory, the per-workspace stat cache, a snapshot budget, the check for extended
attributes, a shared/exclusive lock, and descriptor-based file-system helpers that
never follow a symbolic link.

Objects live at ``objects/ab/cdef...`` (the SHA-256 of their content, hex). One is
written to ``tmp/`` first, fsynced, then renamed into place, so an object file is
either complete or absent; the directories that received new names are fsynced before
a snapshot's manifest is written (see :func:`sync_dirs`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHUNK = 1 << 20
HEX64 = re.compile(r"[0-9a-f]{64}")
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Non-blocking: a FIFO swapped in for a file after the walk cannot hang the open.
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class CorruptObject(Exception):
    """An object's content does not hash to its name (or it cannot be read back)."""


# --------------------------------------------------------------------------- raw I/O


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_chunk(fd: int, size: int = CHUNK) -> bytes:
    """Up to ``size`` bytes (fewer only at end of file: short reads are retried)."""
    parts: list[bytes] = []
    left = size
    while left > 0:
        part = os.read(fd, left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def hash_fd(fd: int) -> tuple[str, int]:
    """SHA-256 and length of what remains readable from ``fd``, in chunks."""
    digest = hashlib.sha256()
    size = 0
    while chunk := os.read(fd, CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_dirs(paths: Iterable[Path]) -> None:
    """Make the renames into these directories durable."""
    for path in sorted(set(paths)):
        fsync_path(path)


# --------------------------------------------------------------------------- objects


@dataclass(frozen=True)
class Stored:
    """What :meth:`Objects.ingest` found: ``new`` if this call stored the object."""

    digest: str
    size: int
    new: bool


class Objects:
    """The content-addressed object directory of one snapshot store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "objects"
        self.tmp = root / "tmp"
        self._made: set[Path] = set()
        self._made_lock = threading.Lock()

    def path(self, digest: str) -> Path:
        return self.dir / digest[:2] / digest[2:]

    def has(self, digest: str) -> bool:
        return os.path.exists(self.path(digest))

    def _ensure(self, path: Path) -> None:
        """Create ``path`` (and its parents) durably, once per process."""
        if path in self._made:
            return
        with self._made_lock:
            missing = []
            probe = path
            while not probe.is_dir():
                missing.append(probe)
                probe = probe.parent
            for directory in reversed(missing):
                with contextlib.suppress(FileExistsError):
                    directory.mkdir(mode=0o700)
                fsync_path(directory.parent)
            self._made.add(path)

    def _temp(self) -> tuple[Path, int]:
        self._ensure(self.tmp)
        path = self.tmp / f"{secrets.token_hex(12)}.tmp"
        return path, os.open(path, _CREATE_FLAGS, 0o444)

    def publish(self, temp: Path, digest: str, dirty: set[Path]) -> None:
        """Rename a complete, fsynced file (of this file system) into place as the
        object ``digest`` (its directory is dirty until :func:`sync_dirs`)."""
        self._publish(temp, digest, dirty)

    def _publish(self, temp: Path, digest: str, dirty: set[Path]) -> None:
        """Rename a complete, fsynced temp file into place (its directory is dirty
        until :func:`sync_dirs`)."""
        target = self.path(digest)
        self._ensure(target.parent)
        os.rename(temp, target)
        dirty.add(target.parent)

    def put_bytes(self, data: bytes, dirty: set[Path],
                  reserve: Callable[[int], None] | None = None) -> Stored:
        digest = hashlib.sha256(data).hexdigest()
        if self.has(digest):
            return Stored(digest, len(data), False)
        if reserve is not None:
            reserve(len(data))
        temp, fd = self._temp()
        try:
            try:
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._publish(temp, digest, dirty)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        return Stored(digest, len(data), True)

    def ingest(self, fd: int, dirty: set[Path],
               reserve: Callable[[int], None] | None = None) -> Stored:
        """Hash and store what is readable from ``fd`` in one pass.

        A small file is read into memory, hashed, and written only if its object is
        missing. A larger one is copied to a temp file while it is hashed (so it is read
        once), and the copy is dropped if the object turns out to exist already.
        ``reserve`` is called with the size of a new object before it is published (it
        raises to refuse it: a budget); content already stored costs nothing.
        """
        first = read_chunk(fd)
        if len(first) < CHUNK:
            return self.put_bytes(first, dirty, reserve)
        digest = hashlib.sha256(first)
        size = len(first)
        temp, out = self._temp()
        try:
            try:
                write_all(out, first)
                del first
                while chunk := os.read(fd, CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    write_all(out, chunk)
                hexdigest = digest.hexdigest()
                new = not self.has(hexdigest)
                if new and reserve is not None:
                    reserve(size)
                if new:
                    os.fsync(out)
            finally:
                os.close(out)
            if new:
                self._publish(temp, hexdigest, dirty)
            else:
                os.unlink(temp)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        return Stored(hexdigest, size, new)

    def read(self, digest: str) -> bytes:
        """A small object (a manifest), verified."""
        data = self.path(digest).read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise CorruptObject(digest)
        return data

    def copy_to(self, digest: str, out: int) -> int:
        """Stream an object into ``out``, verifying its hash; returns its size."""
        fd = os.open(self.path(digest), os.O_RDONLY | os.O_CLOEXEC)
        try:
            check = hashlib.sha256()
            size = 0
            while chunk := os.read(fd, CHUNK):
                check.update(chunk)
                size += len(chunk)
                write_all(out, chunk)
        finally:
            os.close(fd)
        if check.hexdigest() != digest:
            raise CorruptObject(digest)
        return size

    def freshen(self, digest: str) -> None:
        """Mark an existing object as just used (what ``gc(min_age_s=...)`` looks at)."""
        with contextlib.suppress(OSError):
            os.utime(self.path(digest))

    def all(self) -> Iterator[tuple[str, Path]]:
        """(digest, path) of every object file."""
        if not self.dir.is_dir():
            return
        for fan in sorted(self.dir.iterdir()):
            if len(fan.name) != 2 or not fan.is_dir():
                continue
            for item in fan.iterdir():
                digest = fan.name + item.name
                if HEX64.fullmatch(digest):
                    yield digest, item


# --------------------------------------------------------------------------- budgets, xattrs


# Labels the system itself puts on files (a Linux security module's); everything else
# (``user.*``, ACLs, ...) was put there by someone and can carry data.
_SYSTEM_XATTRS = ("security.selinux", "security.apparmor", "security.SMACK64",
                  "security.ima", "security.evm")


def has_xattrs(fd: int) -> bool:
    """Whether the open file or directory carries extended attributes someone set."""
    try:
        names = os.listxattr(fd)
    except OSError as exc:
        # A file system without them has none; otherwise, cannot tell: assume the worst.
        return exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP)
    return any(not name.startswith(_SYSTEM_XATTRS) for name in names)


class OverBudget(Exception):
    pass


class Budget:
    """Bytes of new objects a snapshot may still store (shared by its hash workers)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit
        self._lock = threading.Lock()

    def reserve(self, size: int) -> None:
        with self._lock:
            if size > self.left:
                raise OverBudget
            self.left -= size


# --------------------------------------------------------------------------- stat cache


CacheEntry = tuple[int, int, int, int, str]  # size, mtime_ns, ctime_ns, inode, sha256


def signature(info: os.stat_result) -> tuple[int, int, int, int]:
    return info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino


class StatCache:
    """path -> (size, mtime_ns, ctime_ns, inode, hash) of one workspace's files, as of
    the scan that began at ``scanned_ns``.

    An entry is trusted only if the file's stat signature is unchanged *and* its last
    change (ctime, which every write and every ``utime`` moves) is older than the scan
    by more than ``margin_ns``. That is the racy-git rule: a file written again within
    the same timestamp tick as the read that hashed it keeps its signature, so a
    signature that close to the scan proves nothing and the file is hashed again.

    Stored as one JSON file per workspace, replaced atomically: every snapshot stats
    every path anyway, so the whole cache is read and rewritten each time and a keyed
    store (SQLite) would buy nothing; JSON (not orjson) keeps non-UTF-8 names intact.
    """

    VERSION = 1

    def __init__(self, entries: dict[str, CacheEntry] | None = None,
                 scanned_ns: int = 0) -> None:
        self.entries: dict[str, CacheEntry] = entries or {}
        self.scanned_ns = scanned_ns

    def trusted(self, path: str, info: os.stat_result, margin_ns: int) -> str | None:
        entry = self.entries.get(path)
        if entry is None or entry[:4] != signature(info):
            return None
        if info.st_ctime_ns >= self.scanned_ns - margin_ns:
            return None
        return entry[4]

    @classmethod
    def load(cls, path: Path) -> StatCache:
        try:
            raw: Any = json.loads(path.read_bytes())
            if raw.get("version") != cls.VERSION:
                return cls()
            entries: dict[str, CacheEntry] = {}
            for name, item in raw["entries"].items():
                size, mtime, ctime, ino, digest = item
                entries[name] = (int(size), int(mtime), int(ctime), int(ino), str(digest))
            return cls(entries, int(raw["scanned_ns"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            # Missing or damaged: the cache only saves work, so start again.
            return cls()

    def save(self, path: Path, *, durable: bool = False) -> None:
        data = json.dumps({"version": self.VERSION, "scanned_ns": self.scanned_ns,
                           "entries": self.entries}, separators=(",", ":")).encode()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(temp, _CREATE_FLAGS, 0o600)
        try:
            try:
                write_all(fd, data)
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, path)
            if durable:
                fsync_path(path.parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise


# --------------------------------------------------------------------------- locking


class SharedLock:
    """Many holders of ``shared()`` or one of ``exclusive()``; a waiting exclusive
    holder keeps new shared holders out, so gc is not starved by steady snapshots."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive and not self._waiting)
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            self._cond.wait_for(lambda: not self._exclusive and not self._shared)
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


# --------------------------------------------------------------------------- descriptors


def open_dir(parent_fd: int, name: str) -> int:
    """Open a directory entry (never through a link), making it usable by its owner
    first if it is not (``chmod 000`` in a workspace must not block a restore)."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except PermissionError:
        if not hasattr(os, "O_PATH"):
            raise
    # O_PATH needs no permission on the directory and, with O_NOFOLLOW, cannot be a
    # link; chmod through /proc/self/fd acts on exactly that inode.
    handle = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=parent_fd)
    try:
        mode = os.fstat(handle).st_mode
        os.chmod(f"/proc/self/fd/{handle}", stat.S_IMODE(mode) | 0o700)
    finally:
        os.close(handle)
    return os.open(name, DIR_FLAGS, dir_fd=parent_fd)


def make_writable(fd: int) -> None:
    mode = os.fstat(fd).st_mode
    if mode & 0o700 != 0o700:
        os.fchmod(fd, stat.S_IMODE(mode) | 0o700)


def remove(parent_fd: int, name: str) -> int:
    """Remove an entry and everything below it, following no link; returns how many
    paths went."""
    try:
        info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return 0
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(name, dir_fd=parent_fd)
        return 1
    removed = 1
    try:
        fd = open_dir(parent_fd, name)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        # Swapped for a link or a file since the stat: remove that, never follow it.
        os.unlink(name, dir_fd=parent_fd)
        return 1
    try:
        make_writable(fd)
        for child in os.listdir(fd):
            removed += remove(fd, child)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)
    return removed
