"""API routes, one module per resource."""

from __future__ import annotations

from agentd.server.routes import agents, checkpoints, kernel, runs, sessions, usage

__all__ = ["agents", "checkpoints", "kernel", "runs", "sessions", "usage"]
