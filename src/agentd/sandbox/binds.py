"""Read-only folders of the host shown inside a sandbox (an agent's enabled skills at
``/skills/<name>``): what a backend is given, and how it pins what it binds.

A :class:`ReadOnlyBind` names a folder of the host and the path it takes in the
sandbox. The host folder is the daemon's choice (a skill's published version folder),
never a path from the model; still, the backend does not bind by path: it opens the
folder first, refusing a link as its last component (``O_NOFOLLOW``) and anything but
a directory, and binds that open descriptor (:func:`open_sources`). What the sandbox
sees is then exactly that directory, whatever the path names a moment later. Links
inside it resolve inside the sandbox, where nothing of the host but ``/usr`` and a few
``/etc`` files exists; the registry refuses links in a package anyway.

The sandbox path is checked too (:func:`check_target`): absolute, plain components
only (no ``..``, no ``.``, no empty one), and under :data:`BIND_ROOTS`, so a bind can
neither cover ``/workspace``, ``/usr``, ``/etc`` or ``/proc`` nor climb out.

Backends that cannot show a folder at a path of its own say why
(:meth:`agentd.sandbox.backends.Backend.binds_unsupported`) and refuse binds with a
``sandbox_unsupported`` ToolError rather than run a command without them.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agentd.errors import ToolError

__all__ = ["BIND_ROOTS", "MAX_BINDS", "ReadOnlyBind", "check_binds", "check_target",
           "close_all", "open_sources", "real_paths", "signature"]

#: The top-level folders of the sandbox a bind may go under.
BIND_ROOTS = ("skills",)
#: The most folders one sandbox is given.
MAX_BINDS = 256
_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, kw_only=True, slots=True)
class ReadOnlyBind:
    """A folder of the host (``source``) shown read-only at ``target`` in the sandbox.

    Attributes:
        source: the host folder (its last component may not be a link).
        target: where it shows, e.g. ``/skills/pdf-tools``.
        tag: what identifies this content (a skill's version): two binds with the
            same target and tag show the same files.
    """

    source: Path
    target: str
    tag: str = ""


def check_target(target: str) -> tuple[str, ...]:
    """The components of a bind's sandbox path, or a ToolError saying what is wrong."""
    if not isinstance(target, str) or not target.startswith("/"):
        raise ToolError(f"a bind's sandbox path must be absolute: {str(target)[:80]!r}",
                        code="sandbox_bind_refused")
    parts = tuple(target[1:].split("/"))
    if len(parts) < 2 or parts[0] not in BIND_ROOTS or not all(
            _COMPONENT.fullmatch(p) and p not in (".", "..") for p in parts):
        raise ToolError(f"a bind's sandbox path must be {'|'.join(BIND_ROOTS)}/NAME with "
                        f"plain names: {target[:80]!r}", code="sandbox_bind_refused")
    return parts


def check_binds(binds: Sequence[ReadOnlyBind]) -> None:
    """Every target valid, none twice, none inside another, not too many."""
    if len(binds) > MAX_BINDS:
        raise ToolError(f"at most {MAX_BINDS} folders may be bound in a sandbox",
                        code="sandbox_bind_refused")
    seen: set[tuple[str, ...]] = set()
    for bind in binds:
        parts = check_target(bind.target)
        for other in seen:
            short = min(len(other), len(parts))
            if other[:short] == parts[:short]:
                raise ToolError(f"{bind.target!r} overlaps another bind",
                                code="sandbox_bind_refused")
        seen.add(parts)


def open_sources(binds: Sequence[ReadOnlyBind]) -> list[int]:
    """Open each bind's host folder (no link as its last component, a directory);
    the descriptors in order. On a failure, nothing stays open."""
    check_binds(binds)
    fds: list[int] = []
    try:
        for bind in binds:
            try:
                fd = os.open(bind.source, _OPEN)
            except OSError as exc:
                raise ToolError(f"{bind.target} cannot be shown in the sandbox: its "
                                f"folder cannot be opened ({exc.strerror})",
                                code="sandbox_bind_refused") from None
            fds.append(fd)
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                raise ToolError(f"{bind.target} cannot be shown in the sandbox: not a "
                                "folder", code="sandbox_bind_refused")
    except BaseException:
        close_all(fds)
        raise
    return fds


def close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def real_paths(binds: Sequence[ReadOnlyBind]) -> list[str]:
    """The real path of each bind's folder, as :func:`open_sources` opens it (for a
    backend that can only mount by path: gVisor's gofer)."""
    fds = open_sources(binds)
    try:
        return [os.readlink(f"/proc/self/fd/{fd}") for fd in fds]
    finally:
        close_all(fds)


def signature(binds: Sequence[ReadOnlyBind]) -> str:
    """What identifies a set of binds (a persistent shell made with other binds is
    replaced)."""
    return ";".join(sorted(f"{b.target}={b.tag or b.source}" for b in binds))
