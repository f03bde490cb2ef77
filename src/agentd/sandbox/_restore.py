"""A restore, for :mod:`agentd.sandbox.snapshots`: the snapshot's tree and the workspace
walked together, by directory descriptor, never following a link; identical entries
are left alone, everything else replaced through a temp file and a rename."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from agentd.sandbox._objects import (
    FILE_FLAGS,
    CacheEntry,
    Objects,
    StatCache,
    hash_fd,
    make_writable,
    open_dir,
    remove,
    signature,
)

__all__ = ["Node", "Restorer"]

_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Node:
    """One entry of a snapshot's tree, with its children (a directory's)."""

    entry: dict[str, Any]
    children: dict[str, Node] = field(default_factory=dict)


class Restorer:
    """One restore: walks the snapshot's tree and the workspace together, by descriptor."""

    def __init__(self, objects: Objects, cache: StatCache | None, margin_ns: int) -> None:
        self.objects = objects
        self.old = cache
        self.margin_ns = margin_ns
        self.cache: dict[str, CacheEntry] = {}
        self.written = self.removed = self.unchanged = 0

    def directory(self, fd: int, prefix: str, children: dict[str, Node]) -> None:
        existing: dict[str, os.stat_result] = {}
        with os.scandir(fd) as listing:
            for item in listing:
                try:
                    existing[item.name] = item.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
        changed = False
        for name in sorted(existing.keys() - children.keys()):
            self.removed += remove(fd, name)
            changed = True
        for name in sorted(children):
            node, have = children[name], existing.get(name)
            kind = node.entry["type"]
            if kind == "dir":
                changed |= self._dir(fd, name, prefix + name, node, have)
            elif kind == "file":
                changed |= self._file(fd, name, prefix + name, node.entry, have)
            else:
                changed |= self._link(fd, name, node.entry["target"], have)
        if changed:
            os.fsync(fd)

    def _clear(self, fd: int, name: str, have: os.stat_result | None,
               keep: int) -> os.stat_result | None:
        """Remove ``name`` unless it is of file type ``keep``; what is left."""
        if have is not None and stat.S_IFMT(have.st_mode) != keep:
            self.removed += remove(fd, name)
            return None
        return have

    def _dir(self, fd: int, name: str, path: str, node: Node,
             have: os.stat_result | None) -> bool:
        have = self._clear(fd, name, have, stat.S_IFDIR)
        created = have is None
        if created:
            os.mkdir(name, 0o700, dir_fd=fd)
        try:
            sub = open_dir(fd, name)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            # Replaced by a link or a file since the listing: replace it in turn.
            self.removed += remove(fd, name)
            os.mkdir(name, 0o700, dir_fd=fd)
            created = True
            sub = open_dir(fd, name)
        try:
            before = stat.S_IMODE(os.fstat(sub).st_mode)
            make_writable(sub)
            self.directory(sub, path + "/", node.children)
            if stat.S_IMODE(os.fstat(sub).st_mode) != node.entry["mode"]:
                os.fchmod(sub, node.entry["mode"])
        finally:
            os.close(sub)
        if created or before != node.entry["mode"]:
            self.written += 1
        else:
            self.unchanged += 1
        return created

    def _file(self, fd: int, name: str, path: str, entry: dict[str, Any],
              have: os.stat_result | None) -> bool:
        have = self._clear(fd, name, have, stat.S_IFREG)
        digest, mode = entry["hash"], entry["mode"]
        if have is not None and have.st_size == entry["size"]:
            same = self._same(fd, name, path, have, digest)
            if same is not None and stat.S_IMODE(same.st_mode) == mode:
                self.unchanged += 1
                self.cache[path] = (*signature(same), digest)
                return False
            if same is not None and same.st_nlink == 1 and self._chmod(fd, name, same, mode):
                self.written += 1
                return False
        temp = f".agentd-restore-{secrets.token_hex(6)}.tmp"
        out = os.open(temp, _WRITE_FLAGS, 0o600, dir_fd=fd)
        try:
            try:
                self.objects.copy_to(digest, out)
                os.fchmod(out, mode)
                os.fsync(out)
                info = os.fstat(out)
            finally:
                os.close(out)
            # rename replaces a link or a hard link in the way; it never writes
            # through one.
            os.rename(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            with suppress(OSError):
                os.unlink(temp, dir_fd=fd)
            raise
        self.written += 1
        self.cache[path] = (*signature(info), digest)
        return True

    def _same(self, fd: int, name: str, path: str, have: os.stat_result,
              digest: str) -> os.stat_result | None:
        """The existing file's stat if it holds ``digest``'s content, else None."""
        if self.old is not None and self.old.trusted(path, have, self.margin_ns) == digest:
            return have
        try:
            handle = os.open(name, FILE_FLAGS, dir_fd=fd)
        except OSError:
            return None
        try:
            info = os.fstat(handle)
            if not stat.S_ISREG(info.st_mode) or info.st_ino != have.st_ino:
                return None
            found, _ = hash_fd(handle)
            after = os.fstat(handle)
        finally:
            os.close(handle)
        if found != digest or signature(after)[:3] != signature(info)[:3]:
            return None
        return after

    def _chmod(self, fd: int, name: str, have: os.stat_result, mode: int) -> bool:
        """Fix only the mode of an identical file (one link, so nothing outside)."""
        try:
            handle = os.open(name, FILE_FLAGS, dir_fd=fd)
        except OSError:
            return False
        try:
            info = os.fstat(handle)
            if info.st_ino != have.st_ino or info.st_nlink != 1:
                return False
            os.fchmod(handle, mode)
            return True
        finally:
            os.close(handle)

    def _link(self, fd: int, name: str, target: str, have: os.stat_result | None) -> bool:
        have = self._clear(fd, name, have, stat.S_IFLNK)
        if have is not None:
            try:
                if os.readlink(name, dir_fd=fd) == target:
                    self.unchanged += 1
                    return False
            except OSError:
                pass
        temp = f".agentd-restore-{secrets.token_hex(6)}.tmp"
        os.symlink(target, temp, dir_fd=fd)
        try:
            os.rename(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            with suppress(OSError):
                os.unlink(temp, dir_fd=fd)
            raise
        self.written += 1
        return True
