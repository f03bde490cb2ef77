"""Whose a workspace is: under root, every agent's workspace belongs to its own uid
(:func:`prepare_workspace`), given by descriptor so that nothing planted in it makes
the daemon give away a file outside."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from agentd.sandbox.limits import SANDBOX_UID, sandbox_ids

__all__ = ["prepare_workspace"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def prepare_workspace(path: Path, *, user: tuple[int, int] | None = None) -> None:
    """Make ``path`` the sandbox's own: when the daemon is root, every directory and
    file in it owned by root (or by ``nobody``, the uid every agent shared before
    they had their own) is given to ``user`` (the agent's uid and gid; ``nobody``
    without one), and ``path`` itself gets mode ``0700``: no other agent's uid may
    enter it. Without root it does nothing (the sandbox runs as the daemon's user).

    The tree is walked one descriptor at a time without following links; links
    themselves and files with more than one hard link are left alone, so nothing the
    sandbox planted (a link to ``/etc/shadow``) makes it give away a file outside.
    """
    ids = sandbox_ids(user)
    if ids is None:
        return
    uid, gid = ids
    daemon = {os.geteuid(), SANDBOX_UID} - {uid}
    root_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    stack = [root_fd]
    try:
        info = os.fstat(root_fd)
        if info.st_uid in daemon:
            os.fchown(root_fd, uid, gid)
        os.fchmod(root_fd, 0o700)
        while stack:
            fd = stack.pop()
            try:
                for name in os.listdir(fd):
                    with contextlib.suppress(OSError):
                        _give(fd, name, stack, daemon=daemon, uid=uid, gid=gid)
            finally:
                os.close(fd)
    except BaseException:
        for fd in stack:
            with contextlib.suppress(OSError):
                os.close(fd)
        raise


def _give(dir_fd: int, name: str, stack: list[int], *, daemon: set[int], uid: int,
          gid: int) -> None:
    """Give one entry to the sandbox uid, by descriptor (a path swapped after the
    look cannot redirect the change); directories are pushed on ``stack``."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            child = os.open(".", _DIR_FLAGS, dir_fd=fd)
            stack.append(child)
            if info.st_uid in daemon:
                os.fchown(child, uid, gid)
        elif stat.S_ISREG(info.st_mode) and info.st_nlink == 1 and info.st_uid in daemon:
            os.chown(f"/proc/self/fd/{fd}", uid, gid)
    finally:
        os.close(fd)
