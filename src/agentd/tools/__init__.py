"""Tools: typed callables with a JSON schema and the metadata the runtime enforces.

What the package exports is imported on first use (:mod:`agentd.lazy`): importing a
module of it (the settings import ``agentd.tools.mcp_config``, and so does every CLI
call) does not import the built-in tools and what they need (the sandbox, the HTTP
client, the shell parser).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from agentd.errors import InvalidInput
from agentd.lazy import exports

if TYPE_CHECKING:
    from agentd.media import ToolImage, ToolOutput
    from agentd.tools.a2a import A2A_TOOLS
    from agentd.tools.base import Tool, ToolContext, tool
    from agentd.tools.builtins import BUILTINS
    from agentd.tools.commands import COMMAND_TOOLS
    from agentd.tools.files import FILE_TOOLS
    from agentd.tools.net import NET_TOOLS
    from agentd.tools.search import SEARCH_TOOLS

__all__ = ["A2A_TOOLS", "BUILTINS", "COMMAND_TOOLS", "FILE_TOOLS", "NET_TOOLS",
           "SEARCH_TOOLS", "Tool", "ToolContext", "ToolImage", "ToolOutput", "ToolRegistry",
           "tool"]

__getattr__ = exports(__name__, {
    "A2A_TOOLS": "agentd.tools.a2a", "BUILTINS": "agentd.tools.builtins",
    "COMMAND_TOOLS": "agentd.tools.commands", "FILE_TOOLS": "agentd.tools.files",
    "NET_TOOLS": "agentd.tools.net", "SEARCH_TOOLS": "agentd.tools.search",
    **dict.fromkeys(["Tool", "ToolContext", "tool"], "agentd.tools.base"),
    # What a tool returns when it has images besides its text (agentd.media).
    **dict.fromkeys(["ToolImage", "ToolOutput"], "agentd.media")})


def _built_in() -> dict[str, Tool]:
    tools: dict[str, Tool] = {}
    for name in ("BUILTINS", "FILE_TOOLS", "NET_TOOLS", "SEARCH_TOOLS", "A2A_TOOLS",
                 "COMMAND_TOOLS"):
        tools.update(__getattr__(name))
    return tools


class ToolRegistry:
    """Named tools an agent may list in its ``tools``."""

    def __init__(self, tools: dict[str, Tool] | None = None) -> None:
        self._tools: dict[str, Tool] = _built_in() if tools is None else dict(tools)

    def register(self, t: Tool) -> None:
        self._tools[t.name] = t

    def names(self) -> list[str]:
        return sorted(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def check(self, names: list[str]) -> list[str]:
        """Return ``names`` if every tool exists, else raise InvalidInput naming the unknown."""
        unknown = [n for n in names if n not in self._tools]
        if unknown:
            raise InvalidInput(
                f"unknown tool(s): {', '.join(unknown)}; available: {', '.join(self.names())}"
            )
        if len(set(names)) != len(names):
            raise InvalidInput("tools lists a tool twice")
        return names

    def resolve(self, names: list[str]) -> list[Tool]:
        return [self._tools[n] for n in names if n in self._tools]

    def load_module(self, name: str) -> list[str]:
        """Import ``name`` and register every :class:`Tool` defined at its top level.

        This is how a deployment adds its own tools to the daemon
        (``tool_modules = ["mypkg.tools"]`` in agentd.toml). Returns the names added.
        """
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise InvalidInput(f"cannot import tool module {name!r}: {exc}") from exc
        from agentd.tools.base import Tool

        found = [value for value in vars(module).values() if isinstance(value, Tool)]
        if not found:
            raise InvalidInput(f"tool module {name!r} defines no tools (use @agentd.tools.tool)")
        for t in found:
            if t.name in self._tools and self._tools[t.name] is not t:
                raise InvalidInput(f"tool {t.name!r} from {name!r} clashes with a tool "
                                   "of the same name")
            self._tools[t.name] = t
        return sorted(t.name for t in found)
