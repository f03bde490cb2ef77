"""What a run hands its tools for running commands and reaching the network."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentd.security.policy import grants_host

if TYPE_CHECKING:
    from agentd.sandbox.backends import Backend, Limits
    from agentd.sandbox.shell import ShellPool

__all__ = ["Sandbox"]


@dataclass(kw_only=True, slots=True)
class Sandbox:
    """A run's sandbox (``ToolContext.sandbox``): where its commands run, with what
    limits, and which network it was granted.

    Attributes:
        backend: Where commands run (``None``: the agent has no sandbox).
        limits: The agent's resource limits per command.
        network: The policy's grant: False, True (any host), or host patterns. Only
            True gives commands (the shell) the network; host patterns are for tools
            the daemon runs itself (``http_fetch``).
        shells: The daemon's persistent shells (``shell_key`` names this session's).
        persistent_shell: Whether the shell keeps its state between calls by default.
    """

    backend: Backend | None
    limits: Limits
    network: bool | tuple[str, ...] = False
    shells: ShellPool | None = None
    shell_key: str = ""
    persistent_shell: bool = False

    @property
    def command_network(self) -> bool:
        return self.network is True

    def allows_host(self, host: str) -> bool:
        return grants_host(self.network, host)

    def names_host(self, host: str) -> bool:
        """Whether the grant lists ``host`` itself (no pattern): what a private or
        loopback address needs, so that a wildcard never opens the daemon's own
        network to a fetch."""
        return not isinstance(self.network, bool) and host.lower() in self.network
