"""agentd: an operating system for AI agents."""

from agentd.errors import AgentdError

__version__ = "0.1.0"

__all__ = ["AgentdError", "__version__"]
