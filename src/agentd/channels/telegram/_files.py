"""Attachments written into an agent's workspace without following anything the agent
planted there.

The workspace is the agent's own: its tools may have made ``attachments`` a link to
somewhere else, or left a link where a file is about to be written. Every step here is
taken relative to an open directory descriptor with ``O_NOFOLLOW``, so a link makes
the write fail instead of landing outside ``<workspace>/attachments``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["ATTACHMENTS", "AttachmentFile"]

#: The folder of the workspace attachments are stored in.
ATTACHMENTS = "attachments"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


class AttachmentFile:
    """One file being written into ``<workspace>/attachments/<name>`` (blocking calls:
    run them in a thread). ``name`` must be a single safe name (``safe_file_name``)."""

    def __init__(self, workspace: Path, name: str) -> None:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"not a single file name: {name!r}")
        self.name = name
        self.relative = f"{ATTACHMENTS}/{name}"
        workspace.mkdir(mode=0o700, parents=True, exist_ok=True)
        root = os.open(workspace, _DIR_FLAGS)
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(ATTACHMENTS, mode=0o755, dir_fd=root)
            folder = os.open(ATTACHMENTS, _DIR_FLAGS, dir_fd=root)  # ELOOP on a link
        finally:
            os.close(root)
        try:
            self.fd = os.open(name, _FILE_FLAGS, 0o644, dir_fd=folder)
        finally:
            os.close(folder)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
