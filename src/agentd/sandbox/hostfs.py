"""A read-only host for what runs on the host's own filesystem as an agent's uid.

The process backend's commands and a root daemon's browsers run as the agent's uid on
the host's filesystem. Whatever they could write there (``/tmp``, ``/var/tmp``,
``/dev/shm``, any world-writable directory of the host) would outlive the agent, owned
by its uid, and be readable by the next agent given that uid: sandbox uids could never
be reused. So under root each such process gets a private mount namespace (and IPC
namespace, for SysV and POSIX message queues) in which:

1. every mount of the host is read-only (``mount_setattr(2)``, recursive: one call
   whatever is mounted);
2. ``/tmp``, ``/var/tmp`` and ``/dev/shm`` are fresh ``tmpfs`` of their own, which die
   with the namespace;
3. the paths it must write (the workspace; a browser's profile) are bound back
   writable at their own paths (opened before anything was covered: a path under a
   private ``/tmp`` is made again in it, owned by root, mode ``0711``).

Nothing changes on the host. Where the kernel refuses (no ``CAP_SYS_ADMIN``, a kernel
before 5.12), :func:`probe` says why and the runtime then never reclaims a uid that
ran there (``agentd.runtime.sandboxes``).

This file imports only the standard library: a browser's launcher runs it as a
script (``python3 -I -S hostfs.py KEEP... -- COMMAND...``) before it drops to the
agent's uid and starts Chromium.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PRIVATE_TMP", "Seal", "apply", "main", "plan"]

#: Covered by a tmpfs of their own: the world-writable places every Linux host has.
PRIVATE_TMP = ("/tmp", "/var/tmp", "/dev/shm")

_CLONE_NEWNS = 0x00020000
_CLONE_NEWIPC = 0x08000000
_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8
_MS_REMOUNT = 32
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_AT_FDCWD = -100
_AT_RECURSIVE = 0x8000
_MOUNT_ATTR_RDONLY = 0x1
_SYS_MOUNT_SETATTR = 442  # the same number on x86_64 and aarch64 (asm-generic)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


@dataclass(frozen=True, slots=True)
class Seal:
    """What :func:`apply` does, worked out before the fork (no lookups after it).

    Attributes:
        keep: ``(path, steps, writable)``: a directory bound back at ``path``;
            ``steps`` are the directories made first under a covering tmpfs (the path
            last), empty when nothing covers it.
        covers: ``(path, options)``: the tmpfs mounted on each.
    """

    keep: tuple[tuple[bytes, tuple[bytes, ...], bool], ...]
    covers: tuple[tuple[bytes, bytes], ...]


def plan(keep: Sequence[str], *, tmp_bytes: int, cover: str | None = None,
         show: Sequence[str] = ()) -> Seal:
    """The :class:`Seal` keeping ``keep`` (real paths of directories) writable and
    ``show`` read-only where a private tmp directory would hide them, with private tmp
    directories of ``tmp_bytes`` each; ``cover``: a closed parent of the host to hide
    as well (root's home: see ``_limits.Reach``)."""
    covers: list[tuple[str, bytes]] = []
    for path in PRIVATE_TMP:
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode):  # (a link to another place is left read-only)
            covers.append((path, b"mode=1777,size=%d" % max(tmp_bytes, 65536)))
    if cover is not None and not any(cover.startswith(c.rstrip("/") + "/")
                                     for c, _ in covers):
        # (under a private tmp directory it is hidden already)
        covers.append((cover, b"mode=0711,size=65536"))
    kept = []
    for path, writable in [*((p, True) for p in keep), *((p, False) for p in show)]:
        parts = path.rstrip("/").split("/")
        under = [c for c, _ in covers if path.startswith(c.rstrip("/") + "/")]
        steps: tuple[bytes, ...] = ()
        if under:
            top = max(under, key=len).rstrip("/").count("/")
            steps = tuple(os.fsencode("/".join(parts[:i + 1]))
                          for i in range(top + 1, len(parts)))
        elif not writable:
            continue  # (in sight already, read-only)
        kept.append((os.fsencode(path), steps, writable))
    return Seal(keep=tuple(kept),
                covers=tuple((os.fsencode(c), options) for c, options in covers))


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.unshare.argtypes = [ctypes.c_int]
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                           ctypes.c_ulong, ctypes.c_void_p]
    libc.syscall.restype = ctypes.c_long
    return libc


def _check(result: int) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def apply(seal: Seal, libc: ctypes.CDLL | None = None) -> None:
    """In the calling process (a child before it drops to the agent's uid, as root):
    new mount and IPC namespaces, the host read-only, ``seal``'s tmpfs and kept paths.
    Raises OSError where the kernel refuses (nothing is then changed on the host)."""
    libc = libc or _libc()
    unshare, mount = libc.unshare, libc.mount
    _check(unshare(_CLONE_NEWNS | _CLONE_NEWIPC))
    _check(mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None))
    # Opened in the new namespace (a mount of another cannot be bound), before any
    # cover hides them; the last component is no link.
    held = [os.open(path, _DIR_FLAGS) for path, _, _ in seal.keep]
    try:
        attr = _MountAttr(_MOUNT_ATTR_RDONLY, 0, 0, 0)
        if libc.syscall(_SYS_MOUNT_SETATTR, _AT_FDCWD, b"/", _AT_RECURSIVE,
                        ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
            _check(-1)
        # /proc itself stays writable (it holds nothing that outlives a process): a
        # process writes its own uid_map there to make a user namespace (Chromium's
        # sandbox does); its submounts stay read-only.
        clear = _MountAttr(0, _MOUNT_ATTR_RDONLY, 0, 0)
        if os.path.ismount("/proc") and libc.syscall(
                _SYS_MOUNT_SETATTR, _AT_FDCWD, b"/proc", 0, ctypes.byref(clear),
                ctypes.sizeof(clear)) != 0:
            _check(-1)
        for where, options in seal.covers:
            _check(mount(b"tmpfs", where, b"tmpfs", _MS_NOSUID | _MS_NODEV, options))
        for (path, steps, writable), fd in zip(seal.keep, held, strict=True):
            for step in steps:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(step, 0o711)
            _check(mount(b"/proc/self/fd/%d" % fd, path, None, _MS_BIND, None))
            # A bind copies its source's flags (read-only now): writable again if
            # asked, and nothing set-uid or a device node in it counts.
            _check(mount(None, path, None, _MS_REMOUNT | _MS_BIND | _MS_NOSUID | _MS_NODEV
                         | (0 if writable else _MS_RDONLY), None))
    finally:
        for fd in held:
            os.close(fd)


def main(argv: Sequence[str] | None = None) -> None:
    """``_hostfs.py [--tmp-bytes N] [--show DIR] KEEP... -- COMMAND...``: apply a seal
    keeping ``KEEP`` writable and ``DIR`` in sight (read-only), then become
    ``COMMAND`` (a browser's launcher)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--" not in args:
        raise SystemExit("usage: _hostfs.py [--tmp-bytes N] [--show DIR] KEEP... -- "
                         "COMMAND...")
    split = args.index("--")
    keep, command = args[:split], args[split + 1:]
    tmp_bytes, show = 256 << 20, []
    while keep[:1] in (["--tmp-bytes"], ["--show"]):
        if keep[0] == "--tmp-bytes":
            tmp_bytes = int(keep[1])
        else:
            show.append(os.path.realpath(keep[1]))
        keep = keep[2:]
    if not command:
        raise SystemExit("_hostfs.py: no command")
    try:
        apply(plan([os.path.realpath(path) for path in keep], tmp_bytes=tmp_bytes,
                   show=show))
    except OSError as exc:
        os.write(2, f"agentd: cannot make the host read-only: {exc}\n".encode())
        os._exit(126)
    try:
        os.execv(command[0], command)
    except OSError as exc:
        os.write(2, f"agentd: {command[0]}: {exc.strerror}\n".encode())
        os._exit(127 if exc.errno == errno.ENOENT else 126)


if __name__ == "__main__":
    main()
