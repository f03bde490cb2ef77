"""Tools: typed callables with a JSON schema and the metadata the runtime enforces."""

from __future__ import annotations

from agentd.errors import InvalidInput
from agentd.tools._tool import Tool, ToolContext, tool
from agentd.tools.builtins import BUILTINS

__all__ = ["BUILTINS", "Tool", "ToolContext", "ToolRegistry", "tool"]


class ToolRegistry:
    """Named tools an agent may list in its ``tools``."""

    def __init__(self, tools: dict[str, Tool] | None = None) -> None:
        self._tools: dict[str, Tool] = dict(BUILTINS if tools is None else tools)

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
