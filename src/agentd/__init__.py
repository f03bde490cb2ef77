"""agentd: an operating system for AI agents.

What users import from ``agentd`` (loaded on first use, so ``import agentd`` stays
cheap and the CLI and the client load no server-side layer):

- the HTTP client: :class:`Client`, its frames :class:`SSEEvent` and its errors
  :class:`ClientError`, :class:`APIError`, :class:`ConnectionFailed`,
  :class:`WaitTimeout` (see :mod:`agentd.client`);
- the daemon's configuration: :class:`Settings`, :func:`load_settings`;
- writing tools for ``tool_modules``: :func:`tool`, :class:`Tool`, :class:`ToolContext`;
- the daemon's exception tree, rooted at :class:`AgentdError` (:mod:`agentd.errors`).

Test doubles live in :mod:`agentd.testing`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agentd.errors import AgentdError
from agentd.version import __version__

if TYPE_CHECKING:
    from agentd.client import APIError, Client, ClientError, ConnectionFailed, SSEEvent, WaitTimeout
    from agentd.config import Settings, load_settings
    from agentd.tools import Tool, ToolContext, tool

__all__ = [
    "APIError",
    "AgentdError",
    "Client",
    "ClientError",
    "ConnectionFailed",
    "SSEEvent",
    "Settings",
    "Tool",
    "ToolContext",
    "WaitTimeout",
    "__version__",
    "load_settings",
    "tool",
]

#: Where each lazily loaded name lives.
_HOMES = {
    "APIError": "agentd.client",
    "Client": "agentd.client",
    "ClientError": "agentd.client",
    "ConnectionFailed": "agentd.client",
    "SSEEvent": "agentd.client",
    "WaitTimeout": "agentd.client",
    "Settings": "agentd.config",
    "load_settings": "agentd.config",
    "Tool": "agentd.tools",
    "ToolContext": "agentd.tools",
    "tool": "agentd.tools",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'agentd' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
