"""API routes, one module per resource."""

from __future__ import annotations

from agentd.server.routes import agents, runs, sessions

__all__ = ["agents", "runs", "sessions"]
