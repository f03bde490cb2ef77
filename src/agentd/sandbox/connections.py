"""How many egress connections the daemon holds, and for whom.

Every connection an agent opens through an egress proxy (its commands', its MCP
servers', its browser's) is a descriptor of the daemon's (two, once the proxy has
connected upstream). Without a cap, a few agents holding connections open exhaust the
daemon's descriptor limit and every route of the API fails. So each connection is
admitted against three caps before the proxy reads a byte of it, and counted until
it closes:

- the daemon's, over all proxies (``[sandbox] egress_max_connections``; by default an
  eighth of the descriptor limit: at most a quarter of the descriptors);
- the agent's (``[sandbox] egress_max_per_agent``);
- its tenant's (``caps_of(tenant).egress_connections``); a tenant with no cap of its
  own holds at most three quarters of the daemon's, so that one tenant holding all it
  may still leaves connections to the others.

A refusal names the cap; the proxy answers it with a ``503``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from agentd.sandbox.caps import CapsOf, no_caps

__all__ = ["Connections", "Owner"]


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose connections a proxy carries: an agent (by id) of a tenant."""

    tenant: str = ""
    agent: str = ""


class Connections:
    """The daemon's egress connections, by agent and tenant (one per daemon, shared by
    every proxy; used from the event loop only)."""

    def __init__(self, *, total: int, per_agent: int, caps_of: CapsOf = no_caps) -> None:
        self.total = total
        self.per_agent = per_agent
        self.caps_of = caps_of
        self.held = 0
        #: Connections being answered 503 now (not counted in ``held``).
        self.turning_away = 0
        self._agents: Counter[str] = Counter()
        self._tenants: Counter[str] = Counter()

    def admit(self, owner: Owner) -> str | None:
        """Count one more connection of ``owner``; None when admitted, else why not
        (which cap is reached; nothing is counted)."""
        if self.held >= self.total:
            return (f"the daemon holds its cap of {self.total} egress connections "
                    "([sandbox] egress_max_connections); try again later")
        if self._agents[owner.agent] >= self.per_agent:
            return (f"this agent holds its cap of {self.per_agent} egress connections "
                    "([sandbox] egress_max_per_agent)")
        cap = self.caps_of(owner.tenant).egress_connections
        if cap is not None and self._tenants[owner.tenant] >= cap:
            return (f"tenant {owner.tenant!r} holds its quota of {cap} egress "
                    "connections")
        share = self.total - self.total // 4
        if cap is None and self._tenants[owner.tenant] >= share:
            return (f"tenant {owner.tenant!r} holds {share} egress connections, three "
                    "quarters of the daemon's cap ([sandbox] egress_max_connections): "
                    "the rest is left to other tenants")
        self.held += 1
        self._agents[owner.agent] += 1
        self._tenants[owner.tenant] += 1
        return None

    def release(self, owner: Owner) -> None:
        """One connection of ``owner`` (admitted) is closed."""
        self.held -= 1
        for counts, key in ((self._agents, owner.agent), (self._tenants, owner.tenant)):
            counts[key] -= 1
            if counts[key] <= 0:
                del counts[key]

    def of_agent(self, agent: str) -> int:
        return self._agents[agent]

    def of_tenant(self, tenant: str) -> int:
        return self._tenants[tenant]
