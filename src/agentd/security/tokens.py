"""The daemon's bearer tokens: the bootstrap token in its home, and their names.

A daemon requires a token from its first start (``auth = "token"``, the default): when
none is configured, one is generated into ``$AGENTD_HOME/token`` (mode 0600, the home
0700), and the CLI and the Python client on the same machine read it from there. The
token a request presents names who made it: ``bootstrap`` for the home's token,
``token`` for ``AGENTD_TOKEN``, ``token-N`` for the N-th of ``tokens``. That name is
what an approval's ``by`` records (a named-token system comes later).

``auth = "none"`` (an explicit, loudly logged choice) lets requests without a token
through, except what only a person may do: deciding approvals, changing an agent's
settings or a session's policy. Those always need a token, so nothing that runs in a
sandbox (which can read no token) can do them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from pathlib import Path

__all__ = ["BOOTSTRAP", "TOKEN_FILE", "ensure_home", "ensure_token", "read_token",
           "undumpable"]

log = logging.getLogger(__name__)

BOOTSTRAP = "bootstrap"
TOKEN_FILE = "token"


def ensure_home(home: Path) -> None:
    """Create the daemon's home (0700), and close an existing one to other users."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = stat.S_IMODE(home.stat().st_mode)
    if mode & 0o077:
        os.chmod(home, mode & 0o700)


def undumpable() -> bool:
    """Make this process non-dumpable: its ``/proc/PID`` files (``environ`` with the
    provider keys and tokens, ``mem``, ``fd``) become root's, and no process of the
    same user may ptrace it. Without it, a command a non-root daemon runs as its own
    user (the process backend) reads the daemon's secrets there. False where the
    kernel call is missing (not Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(4, 0, 0, 0, 0) == 0)  # PR_SET_DUMPABLE, 0
    except (OSError, AttributeError):
        return False


def read_token(home: Path) -> str | None:
    """The bootstrap token in ``home``, or None when there is none (or it cannot be
    read by this user: a client of another user's daemon needs its token given)."""
    try:
        text = (home / TOKEN_FILE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def ensure_token(home: Path) -> str:
    """The bootstrap token of ``home``, generated (mode 0600) on the first call."""
    ensure_home(home)
    path = home / TOKEN_FILE
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode):
            raise RuntimeError(f"{path} is not a regular file; remove it") from None
        if stat.S_IMODE(info.st_mode) & 0o077:
            log.warning("%s was readable by other users; made it 0600", path)
            os.chmod(path, 0o600)
        existing = read_token(home)
        if existing is None:
            raise RuntimeError(f"{path} is empty or unreadable; remove it to get a new "
                               "token") from None
        return existing
    try:
        os.write(fd, token.encode("ascii") + b"\n")
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    os.close(fd)
    log.info("generated the bootstrap token in %s (the CLI and client on this machine "
             "read it from there)", path)
    return token
