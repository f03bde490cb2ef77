"""Agents whose loop lives in another framework, run by agentd through an adapter.

An agent whose ``model`` is ``adapter:MODULE:OBJECT`` is answered by that object
(an :class:`AgentAdapter`: termo-agent's five methods), with agentd's durable log,
session modes, budgets, auth and streaming around it. Which objects may be named is
the operator's decision (``[adapters] allow``). See docs/adapters.md.
"""

from agentd.adapters._loader import is_allowed, load_object, make_adapter, parse_target
from agentd.adapters._protocol import (
    AdapterBase,
    AgentAdapter,
    Session,
    StreamEvent,
    current_session,
)
from agentd.adapters._service import AdapterModel, AdapterModels, Adapters, adapter_model
from agentd.adapters.function import FunctionAdapter, function

__all__ = [
    "AdapterBase",
    "AdapterModel",
    "AdapterModels",
    "Adapters",
    "AgentAdapter",
    "FunctionAdapter",
    "Session",
    "StreamEvent",
    "adapter_model",
    "current_session",
    "function",
    "is_allowed",
    "load_object",
    "make_adapter",
    "parse_target",
]
