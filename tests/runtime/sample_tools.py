"""A tool module as a deployment would write one (loaded by tool_modules)."""

from agentd.tools import tool


@tool(idempotent=True)
def shout(text: str) -> str:
    """Upper-case the text."""
    return text.upper()
