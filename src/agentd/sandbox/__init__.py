"""Where tools run: the agent's workspace, and the sandbox backends that run its
commands (:mod:`agentd.sandbox.backends`, :mod:`agentd.sandbox.shell`).

The names below are imported on first use (:mod:`agentd.lazy`): the workspace's
helpers, which every tool imports, do not need the backends."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentd.lazy import exports

if TYPE_CHECKING:
    from agentd.sandbox.backends import (
        Backend,
        ExecResult,
        Limits,
        choose,
        detect,
        prepare_workspace,
    )
    from agentd.sandbox.shell import PersistentShell, ShellPool
    from agentd.sandbox.workspace import Workspace

__all__ = [
    "Backend",
    "ExecResult",
    "Limits",
    "PersistentShell",
    "ShellPool",
    "Workspace",
    "choose",
    "detect",
    "prepare_workspace",
]

__getattr__ = exports(__name__, {
    **dict.fromkeys(["Backend", "ExecResult", "Limits", "choose", "detect",
                     "prepare_workspace"], "agentd.sandbox.backends"),
    "PersistentShell": "agentd.sandbox.shell", "ShellPool": "agentd.sandbox.shell",
    "Workspace": "agentd.sandbox.workspace"})
