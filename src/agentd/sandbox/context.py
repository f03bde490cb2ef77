"""What a run hands its tools for running commands and reaching the network."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agentd.errors import ToolError
from agentd.sandbox.connections import Owner
from agentd.sandbox.egress import EgressRules
from agentd.security.policy import grants_host

if TYPE_CHECKING:
    from agentd.sandbox.backends import Backend, Limits
    from agentd.sandbox.binds import ReadOnlyBind
    from agentd.sandbox.egress import EgressProxies, EgressProxy
    from agentd.sandbox.shell import ShellPool

__all__ = ["Sandbox"]


@dataclass(kw_only=True, slots=True)
class Sandbox:
    """A run's sandbox (``ToolContext.sandbox``): where its commands run, with what
    limits, and which network it was granted.

    Attributes:
        backend: Where commands run (``None``: the agent has no sandbox).
        limits: The agent's resource limits per command.
        network: The policy's grant: False, True (any public host), or host patterns.
            Commands (the shell) get it through the egress proxy, which enforces it
            on every connection; ``http_fetch`` checks it with the same rules.
        egress: The daemon's egress proxies (None: commands get no network).
        rules: The operator's side of every network check (listed private
            endpoints, the daemon's ports).
        shells: The daemon's persistent shells (``shell_key`` names this session's).
        persistent_shell: Whether the shell keeps its state between calls by default.
        unavailable: Why there is no backend for this run's commands, if it is not
            simply that the agent has none.
        binds: The host folders the shell's commands see read-only (the agent's
            enabled skills at ``/skills/<name>``), asked for before each command so
            that a skill enabled, disabled, replaced or removed meanwhile shows at
            the next one; None where the backend cannot show them.
        owner: The agent (and its tenant) whose egress proxies and connection caps
            its commands and browser use.
    """

    backend: Backend | None
    limits: Limits
    network: bool | tuple[str, ...] = False
    egress: EgressProxies | None = None
    rules: EgressRules = field(default_factory=EgressRules)
    shells: ShellPool | None = None
    shell_key: str = ""
    persistent_shell: bool = False
    #: Why ``backend`` is None though the agent has one (said by the command tools).
    unavailable: str = ""
    binds: Callable[[], Awaitable[Sequence[ReadOnlyBind]]] | None = None
    owner: Owner = field(default_factory=Owner)

    @property
    def command_network(self) -> bool:
        """Whether commands get the network (through the proxy): any grant."""
        return bool(self.network)

    def allows_host(self, host: str) -> bool:
        return grants_host(self.network, host)

    async def proxy(self) -> EgressProxy | None:
        """The egress proxy of this grant, for commands (None: no grant)."""
        if not self.network:
            return None
        if self.egress is None:
            raise ToolError("this daemon has no egress proxy: commands get no network",
                            code="network_denied")
        return await self.egress.get(self.network, self.owner)

    def shell_suffix(self) -> str:
        """Names the persistent shell of this grant: a changed grant gets a new shell,
        never the old one's network."""
        if self.network is True:
            return "net"
        if not self.network:
            return "nonet"
        return "net:" + ",".join(sorted({h.lower() for h in self.network}))
