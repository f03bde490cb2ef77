"""API routes, one module per resource."""

from __future__ import annotations

from agentd.server.routes import agents, checkpoints, runs, sessions

__all__ = ["agents", "checkpoints", "runs", "sessions"]
