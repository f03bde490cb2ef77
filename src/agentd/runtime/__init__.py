"""The kernel: the Runtime facade, the supervisor that owns runs, and the agent loop."""

from __future__ import annotations

from agentd.runtime.bus import EventBus, Subscription, Token, follow
from agentd.runtime.runtime import Runtime, SendResult

__all__ = ["EventBus", "Runtime", "SendResult", "Subscription", "Token", "follow"]
