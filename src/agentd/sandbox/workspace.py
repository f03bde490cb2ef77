"""An agent's workspace: the one directory its file tools may touch.

Every path a tool is given is relative to the workspace and is opened one component
at a time from a descriptor of the workspace root (``openat`` with ``O_NOFOLLOW``), so
no check can be raced: there is no moment where a path was checked and a different
file is then opened. What is refused, with a :class:`~agentd.errors.ToolError` the
model reads:

- absolute paths, and ``..`` that would climb out of the workspace;
- symbolic links, anywhere on the path (a link swapped in after a check cannot be
  followed, because nothing is followed);
- anything but regular files and directories (devices, FIFOs, sockets), checked on
  the open descriptor (FIFOs are opened non-blocking, so that opening one cannot hang);
- regular files with more than one hard link: the other name may be outside the
  workspace (``ln /etc/shadow x``), and writing through it would change that file.

Writes go to a temporary file in the same directory, then ``rename`` over the target:
a reader sees the old content or the new, never half of it.

A workspace may have a size quota (:func:`set_usage`, kept up to date by the runtime's
snapshots, which know the size): a write that would take the workspace over it, or
any write while it is over, is refused with ``quota_exceeded``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from agentd.errors import ToolError

__all__ = ["Workspace", "set_usage", "usage"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_DEPTH = 64


def _kind(mode: int) -> str:
    return ("dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode)
            else "link" if stat.S_ISLNK(mode) else "other")


def _refuse(message: str) -> ToolError:
    return ToolError(message, code="path_refused")


#: Workspace root -> [bytes in it as last measured (plus what file tools wrote since),
#: its quota]. One daemon per process; the runtime owns the figures.
_usage: dict[str, list[int]] = {}


def set_usage(root: Path, used: int, limit: int | None) -> None:
    """Record a workspace's size and quota (``limit`` None: no quota)."""
    if limit is None:
        _usage.pop(str(root), None)
    else:
        _usage[str(root)] = [used, limit]


def usage(root: Path) -> tuple[int, int] | None:
    """A workspace's (bytes used, quota) as recorded, or None (no quota). A tool worker
    process is handed this with each call and hands back what it used."""
    found = _usage.get(str(root))
    return (found[0], found[1]) if found is not None else None


def _mb(size: int) -> str:
    return f"{size / (1 << 20):.1f} MB"


class Workspace:
    """The workspace directory of one agent."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._owner: tuple[int, int] | None = None

    def _give(self, fd: int) -> None:
        """A file or directory the daemon (as root) creates goes to the workspace's
        owner (the sandbox's uid), so that commands in the sandbox can change it."""
        if self._owner is None:
            info = os.stat(self.root)
            self._owner = (info.st_uid, info.st_gid)
        if os.geteuid() == 0 and self._owner[0] != 0:
            os.fchown(fd, *self._owner)

    def _reserve(self, size: int) -> None:
        """Count ``size`` more bytes against the quota, or refuse them."""
        usage = _usage.get(str(self.root))
        if usage is None:
            return
        used, limit = usage
        if used > limit:
            raise ToolError(f"the workspace is over its size quota ({_mb(used)} of "
                            f"{_mb(limit)}): remove files before writing more",
                            code="quota_exceeded")
        if used + size > limit:
            raise ToolError(f"writing {_mb(size)} would take the workspace over its size "
                            f"quota ({_mb(used)} of {_mb(limit)} used)",
                            code="quota_exceeded")
        usage[0] = used + size

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    # -- paths -------------------------------------------------------------------------

    @staticmethod
    def parts(path: str) -> list[str]:
        """The components of ``path`` inside the workspace ([] for the root itself)."""
        if not isinstance(path, str) or "\x00" in path:
            raise _refuse("a path must be a string without NUL characters")
        pure = PurePosixPath(path)
        if pure.is_absolute():
            raise _refuse(f"{path!r} is absolute: paths are relative to the workspace")
        out: list[str] = []
        for part in pure.parts:
            if part == "..":
                if not out:
                    raise _refuse(f"{path!r} leads out of the workspace")
                out.pop()
            elif part not in (".", ""):
                out.append(part)
        if len(out) > _MAX_DEPTH:
            raise _refuse(f"{path!r} is nested too deep")
        return out

    @contextlib.contextmanager
    def _dir(self, parts: list[str], *, create: bool = False) -> Iterator[int]:
        """A descriptor of the directory ``parts`` (no link followed on the way)."""
        self.ensure()
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for index, part in enumerate(parts):
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise _refuse(f"{'/'.join(parts[:index + 1])!r} does not exist"
                                      ) from None
                    os.mkdir(part, 0o755, dir_fd=fd)
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                    self._give(nxt)
                except OSError as exc:
                    raise self._why(fd, part, parts[:index + 1], exc) from None
                os.close(fd)
                fd = nxt
            yield fd
        finally:
            os.close(fd)

    def _why(self, dir_fd: int, name: str, parts: list[str], exc: OSError) -> ToolError:
        where = "/".join(parts)
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            return _refuse(f"{where!r}: {exc.strerror or exc}")
        if stat.S_ISLNK(info.st_mode):
            return _refuse(f"{where!r} is a symbolic link: file tools do not follow links")
        if not stat.S_ISDIR(info.st_mode):
            return _refuse(f"{where!r} is not a directory")
        return _refuse(f"{where!r}: {exc.strerror or exc}")

    # -- reading -----------------------------------------------------------------------

    def read_bytes(self, path: str, *, limit: int) -> tuple[bytes, int]:
        """Up to ``limit`` bytes of a regular file, and its size."""
        parts = self.parts(path)
        if not parts:
            raise _refuse("the workspace root is a directory, not a file")
        with self._dir(parts[:-1]) as dir_fd:
            fd = self._open_file(dir_fd, parts, os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                chunks: list[bytes] = []
                left = limit
                while left > 0:
                    chunk = os.read(fd, min(left, 1 << 20))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    left -= len(chunk)
                return b"".join(chunks), size
            finally:
                os.close(fd)

    def _open_file(self, dir_fd: int, parts: list[str], flags: int) -> int:
        name, where = parts[-1], "/".join(parts)
        try:
            fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=dir_fd)
        except FileNotFoundError:
            raise _refuse(f"{where!r} does not exist") from None
        except OSError as exc:
            raise self._why(dir_fd, name, parts, exc) from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise _refuse(f"{where!r} is {kind}")
        if info.st_nlink > 1:
            os.close(fd)
            raise _refuse(f"{where!r} has {info.st_nlink} hard links; one may be outside "
                          "the workspace, so file tools do not touch it")
        os.set_blocking(fd, True)
        return fd

    def kind(self, path: str) -> str:
        """``dir``, ``file``, ``link`` or ``other`` (the root is a ``dir``)."""
        parts = self.parts(path)
        if not parts:
            return "dir"
        with self._dir(parts[:-1]) as dir_fd:
            try:
                mode = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                raise _refuse(f"{'/'.join(parts)!r} does not exist") from None
        return _kind(mode)

    def listdir(self, path: str = ".") -> list[tuple[str, str, int]]:
        """(name, kind, size) of a directory's entries; kind is file, dir, link, other."""
        with self._dir(self.parts(path)) as dir_fd:
            out = []
            for name in sorted(os.listdir(dir_fd)):
                try:
                    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                kind = _kind(info.st_mode)
                out.append((name, kind, info.st_size if kind == "file" else 0))
            return out

    def walk(self, path: str = ".", *, limit: int = 10_000) -> list[str]:
        """Regular files below ``path`` (relative to the workspace), links not followed."""
        found: list[str] = []
        start = self.parts(path)

        def visit(parts: list[str]) -> None:
            if len(found) >= limit or len(parts) > _MAX_DEPTH:
                return
            for name, kind, _ in self.listdir("/".join(parts) or "."):
                if kind == "file":
                    found.append("/".join([*parts, name]))
                elif kind == "dir":
                    visit([*parts, name])
                if len(found) >= limit:
                    return

        visit(start)
        return found

    # -- writing -----------------------------------------------------------------------

    def write_bytes(self, path: str, data: bytes) -> None:
        """Replace (or create) a regular file atomically; parents are created."""
        parts = self.parts(path)
        if not parts:
            raise _refuse("the workspace root is a directory, not a file")
        self._reserve(len(data))
        with self._dir(parts[:-1], create=True) as dir_fd:
            self._check_target(dir_fd, parts)
            temp = f".{parts[-1]}.{secrets.token_hex(4)}.tmp"
            try:
                self._write_new(dir_fd, temp, data)
                os.rename(temp, parts[-1], src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=dir_fd)
                raise

    def write_many(self, files: list[tuple[str, bytes]]) -> None:
        """Write several files all-or-nothing: every content goes to a temporary file
        first (a refused path or a full disk changes nothing), then each target is
        moved aside and its temporary renamed in; a failure there puts every file back
        as it was. A crash in the middle can leave ``.<name>.*.bak`` copies of the old
        files next to them (and the session's workspace snapshot to restore from)."""
        paths = [self.parts(p) for p, _ in files]
        if len({tuple(p) for p in paths}) != len(paths):
            raise ToolError("a file is listed twice", code="tool_bad_arguments")
        if any(not p for p in paths):
            raise _refuse("the workspace root is a directory, not a file")
        self._reserve(sum(len(data) for _, data in files))
        staged: list[tuple[int, str, str, bool]] = []  # dir fd, name, temp, existed
        stack = contextlib.ExitStack()
        with stack:
            try:
                for parts, (_, data) in zip(paths, files, strict=True):
                    dir_fd = stack.enter_context(self._dir(parts[:-1], create=True))
                    self._check_target(dir_fd, parts)
                    try:
                        os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
                        existed = True
                    except FileNotFoundError:
                        existed = False
                    temp = f".{parts[-1]}.{secrets.token_hex(4)}.tmp"
                    staged.append((dir_fd, parts[-1], temp, existed))
                    self._write_new(dir_fd, temp, data)
            except BaseException:
                for dir_fd, _, temp, _ in staged:
                    with contextlib.suppress(OSError):
                        os.unlink(temp, dir_fd=dir_fd)
                raise
            done: list[tuple[int, str, str | None]] = []  # dir fd, name, backup
            try:
                for dir_fd, name, temp, existed in staged:
                    backup = None
                    if existed:
                        backup = f".{name}.{secrets.token_hex(4)}.bak"
                        os.rename(name, backup, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                    done.append((dir_fd, name, backup))
                    os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                for dir_fd, name, backup in reversed(done):
                    with contextlib.suppress(OSError):
                        if backup is not None:
                            os.rename(backup, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                        else:
                            os.unlink(name, dir_fd=dir_fd)
                for dir_fd, _, temp, _ in staged:
                    with contextlib.suppress(OSError):
                        os.unlink(temp, dir_fd=dir_fd)
                raise
            for dir_fd, _, backup in done:
                if backup is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(backup, dir_fd=dir_fd)

    def _write_new(self, dir_fd: int, name: str, data: bytes) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
        try:
            self._give(fd)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def _check_target(self, dir_fd: int, parts: list[str]) -> None:
        """An existing target must be a regular file with one link (a link or a
        directory in its place is refused, not replaced)."""
        try:
            info = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        where = "/".join(parts)
        if stat.S_ISLNK(info.st_mode):
            raise _refuse(f"{where!r} is a symbolic link: file tools do not follow links")
        if not stat.S_ISREG(info.st_mode):
            raise _refuse(f"{where!r} is not a regular file")
        if info.st_nlink > 1:
            raise _refuse(f"{where!r} has {info.st_nlink} hard links; one may be outside "
                          "the workspace, so file tools do not touch it")
