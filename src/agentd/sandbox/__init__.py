"""Where tools run: the agent's workspace, and the sandbox backends that run its
commands (:mod:`agentd.sandbox.backends`, :mod:`agentd.sandbox.shell`)."""

from __future__ import annotations

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
