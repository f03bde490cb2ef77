"""Where tools run: the agent's workspace (and, to come, the sandbox backends)."""

from __future__ import annotations

from agentd.sandbox.workspace import Workspace

__all__ = ["Workspace"]
