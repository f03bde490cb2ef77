"""The core: agents, runs and sessions, the supervisor that owns runs, the agent loop,
the kernel every model call goes through, and the event bus.

The :class:`~agentd.assembly.Runtime` facade that doors call is built from these
services and the capabilities above them in :mod:`agentd.assembly` (the composition
root); nothing here imports a capability's package (docs/architecture.md).
"""

from __future__ import annotations

from agentd.runtime.bus import EventBus, Subscription, Token, follow
from agentd.runtime.runs import Also, SendResult

__all__ = ["Also", "EventBus", "SendResult", "Subscription", "Token", "follow"]
