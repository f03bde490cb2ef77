"""The kernel: the Runtime facade, the supervisor that owns runs, and the agent loop.

``Runtime`` is imported on first use (PEP 562): the services it builds (memory's
compaction and consolidation) use the kernel's model calls and session histories from
this package, and importing them must not import the facade that imports them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentd.runtime.bus import EventBus, Subscription, Token, follow

if TYPE_CHECKING:
    from agentd.runtime.runtime import Runtime, SendResult

__all__ = ["EventBus", "Runtime", "SendResult", "Subscription", "Token", "follow"]


def __getattr__(name: str) -> Any:
    if name in ("Runtime", "SendResult"):
        from agentd.runtime import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'agentd.runtime' has no attribute {name!r}")
