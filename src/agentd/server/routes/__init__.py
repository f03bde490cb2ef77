"""API routes, one module per resource."""

from __future__ import annotations

from agentd.server.routes import (
    admin,
    agents,
    approvals,
    channels,
    checkpoints,
    evals,
    events,
    export,
    feed,
    heartbeat,
    identity,
    kernel,
    mcp_oauth,
    memory,
    memory_entries,
    metrics,
    overview,
    run_list,
    runs,
    schedules,
    secrets,
    sessions,
    skills,
    snapshots,
    subtasks,
    tools,
    usage,
    webhooks,
)

__all__ = ["admin", "agents", "approvals", "channels", "checkpoints", "evals", "events", "export",
           "feed", "heartbeat", "identity", "kernel", "mcp_oauth", "memory", "memory_entries",
           "metrics", "overview", "run_list", "runs", "schedules", "secrets", "sessions",
           "skills", "snapshots", "subtasks", "tools", "usage", "webhooks"]
