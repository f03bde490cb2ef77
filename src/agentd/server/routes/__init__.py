"""API routes, one module per resource."""

from __future__ import annotations

from agentd.server.routes import (
    agents,
    approvals,
    checkpoints,
    events,
    kernel,
    runs,
    sessions,
    usage,
)

__all__ = ["agents", "approvals", "checkpoints", "events", "kernel", "runs", "sessions", "usage"]
